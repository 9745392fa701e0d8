"""The embedded end-to-end demo: compress the Korean Vosk model, decode, report.

For each system (the default run: the prepared model; Kaldi's own apply-svd;
pruning and the joint budget method without fine-tuning; the joint method at 0.5x
with a short distillation; tensor-train -- ``--full`` runs the curve of
``default_systems``) it
writes ``OUT/models/NAME.mdl``, decodes the scoring audio with Vosk (the original
graph; only the acoustic model changes), and scores it: CER against the
transcripts (Korean: characters, spaces removed) and, always, "agreement" -- the
CER of the system's hypotheses against the prepared model's.  Results go to
``OUT/results.md`` (table), ``OUT/results.json`` and ``OUT/cer_vs_params.png``.

Tuning audio (calibration and fine-tuning) and scoring audio are disjoint: with
``../shared/data`` it tunes on ``ko_wide_train`` and scores on ``ko_wide_dev``;
with ``--data DIR`` alone (no ``--calibration``) it splits DIR, every other file,
into a tuning part and a scoring part; without ``../shared`` (research data end
users do not have) it synthesises a small Korean set with espeak-ng, splits it the
same way and reports agreement only.  Fine-tuning keeps a part of the tuning audio
apart to pick its best epoch.  A system whose tuning audio meets the scored audio
(the same wav files, through any path or link) is an error.

Resumable: a finished model or decode is not redone; every file is written
through a temporary file and a rename, so an interrupted run leaves no broken
file; an output directory keeps the data sets it was started with.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KALDI_COMPRESS_SHARED", REPO.parent / "shared"))

# Sentences for the synthetic fallback set (public-domain style everyday Korean).
SYNTH_SENTENCES = [
    "오늘 날씨가 정말 좋네요", "내일 아침 일곱 시에 회의가 있습니다", "이 식당은 김치찌개가 맛있어요",
    "지하철역까지 걸어서 십 분 걸립니다", "주말에 가족과 함께 공원에 갔어요",
    "도서관에서 책을 두 권 빌렸습니다", "커피 한 잔 주세요", "이 버스는 서울역으로 갑니다",
    "저는 한국어를 공부하고 있어요", "전화번호를 다시 한 번 말씀해 주세요",
    "다음 주에 부산으로 여행을 갑니다", "창문을 열어도 될까요",
]


@dataclass
class System:
    name: str
    method: str          # prepared | kaldi-svd | svd | prune | compress | tt | finetune | pack
    options: dict
    decode: bool = True  # False: only built, as the student of a fine-tuned system

    @property
    def calibrated(self) -> bool:
        return self.method in ("prune", "compress") or \
            (self.method == "svd" and self.options["data"])


CURVE = (0.9, 0.8, 0.6, 0.5, 0.3, 0.2)


def default_systems(full: bool = False) -> list[System]:
    """The default run: the baseline, Kaldi's apply-svd, the best systems without
    fine-tuning (pruning, the joint budget method), the joint method at 0.5x with a
    short distillation, and tensor-train.  ``full``: the curve -- svd, prune and compress
    at every ratio of ``CURVE``, each also with 30 minutes of distillation, and the
    uncompressed model distilled the same way (the fair reference once distillation
    adapts a student), the TT variants, and packs: the prepared model at 8
    and 4 bits, and the shipping line -- compress-0.5 distilled through 4-bit codebooks
    (``finetune --pack-bits=4``), packed at 4 bits."""
    out = [System("prepared", "prepared", {}),
           System("kaldi-apply-svd-e0.9", "kaldi-svd",
                  {"energy_threshold": 0.9, "shrinkage_threshold": 0.8})]
    if full:
        tune = {"max_minutes": 30}
        out.append(System("svd-weights-0.75", "svd", {"param_ratio": 0.75, "data": False}))
        for r in CURVE:
            out += [System(f"svd-{r}", "svd", {"param_ratio": r, "data": True}),
                    System(f"prune-{r}", "prune", {"param_ratio": r}),
                    System(f"compress-{r}", "compress", {"param_ratio": r})]
        out += [System(f"{s}-finetuned", "finetune", {"student": s, **tune})
                for s in ["prepared"] + [f"{m}-{r}" for r in CURVE
                                         for m in ("svd", "prune", "compress")]]
        out += [System("tt-0.75", "tt", {"param_ratio": 0.75, "allow_svd": True}),
                System("tt-0.75-finetuned", "finetune", {"student": "tt-0.75", **tune}),
                System("tt-only-0.75", "tt", {"param_ratio": 0.75, "allow_svd": False}),
                System("tt-only-0.75-finetuned", "finetune",
                       {"student": "tt-only-0.75", **tune}),
                System("tt-0.5", "tt", {"param_ratio": 0.5, "allow_svd": True}),
                System("tt-only-0.9", "tt", {"param_ratio": 0.9, "allow_svd": False}),
                System("pack-8", "pack", {"student": "prepared", "bits": 8}),
                System("pack-4", "pack", {"student": "prepared", "bits": 4}),
                System("compress-0.5-qat4", "finetune",
                       {"student": "compress-0.5", **tune, "pack_bits": 4}, decode=False),
                System("compress-0.5-qat4-pack4", "pack",
                       {"student": "compress-0.5-qat4", "bits": 4})]
        return out
    out += [System("prune-0.8", "prune", {"param_ratio": 0.8}),
            System("compress-0.6", "compress", {"param_ratio": 0.6}),
            System("compress-0.5", "compress", {"param_ratio": 0.5}, decode=False),
            System("compress-0.5-finetuned", "finetune",
                   {"student": "compress-0.5", "max_minutes": 3}),
            System("tt-0.75", "tt", {"param_ratio": 0.75, "allow_svd": True})]
    return out


def select_systems(systems: list[System], wanted: str | None) -> list[System]:
    """``--systems``: the named systems, the baseline, and the students of the named
    fine-tuned or packed systems, theirs in turn (built, not decoded, unless named)."""
    if not wanted:
        return systems
    names = set(wanted.split(","))
    unknown = names - {s.name for s in systems}
    if unknown:
        sys.exit(f"demo: unknown system(s) {', '.join(sorted(unknown))}; this run has "
                 f"{', '.join(s.name for s in systems)} (--full has more)")
    by_name, students, todo = {s.name: s for s in systems}, set(), list(names)
    while todo:
        student = by_name[todo.pop()].options.get("student")
        if student and student not in students:
            students.add(student)
            todo.append(student)
    return [s if s.name in names or s.name == "prepared" else dataclasses.replace(s, decode=False)
            for s in systems if s.name in names | students | {"prepared"}]


# --- data: scoring audio and tuning audio, never the same --------------------------------

@dataclass
class DataSets:
    scored_on: Path               # the speech dir decoded and scored
    refs: dict[str, str] | None   # its transcripts (None: agreement only)
    tuning: list[Path]            # where calibration and fine-tuning audio comes from
    fit: Path                     # the tuning audio minus `valid`: calibration reads it
    finetune: Path                # a part of `fit`: fine-tuning trains on it
    valid: Path                   # a part of the tuning audio: fine-tuning validates on it
    note: str                     # how the sets were chosen

    def read_by(self, system: System, student: System | None = None) -> list[Path]:
        """The directories a system's calibration and fine-tuning read."""
        if system.method == "finetune":
            return [self.finetune, self.valid] + (self.read_by(student) if student else [])
        if system.method == "pack":          # reads no audio; its student may have
            return self.read_by(student) if student else []
        return [self.fit] if system.calibrated else []

    def tuned_on(self, read: list[Path]) -> list[str]:
        """What a system's ``tuned_on`` says: the tuning dirs, if it read any of them."""
        return [str(d) for d in self.tuning] if read else []


def wav_paths(dirs: list[Path]) -> list[Path]:
    return [w for d in dirs for w in sorted(Path(d).glob("*.wav"))]


def check_held_out(tuned: list[Path], scored: Path) -> None:
    """Error if any wav of the ``tuned`` dirs is a wav of ``scored`` (resolved paths)."""
    from kaldi_compress.errors import KaldiCompressError
    scored_wavs = {w.resolve() for w in wav_paths([scored])}
    both = sorted(str(w) for w in wav_paths(tuned) if w.resolve() in scored_wavs)
    if both:
        raise KaldiCompressError(
            f"{len(both)} wav(s) of the tuning audio ({', '.join(map(str, tuned))}) are "
            f"scored audio ({scored}), e.g. {both[0]}: a system must never be scored on "
            "audio it was tuned on")


def spread(items: list, n: int) -> list:
    """``n`` items spread evenly over the list (corpora sort by speaker)."""
    if n <= 0 or n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def split_alternate(wavs: list[Path]) -> tuple[list[Path], list[Path]]:
    """(tuning, scoring): the sorted files alternately, the first one tuning."""
    wavs = sorted(wavs)
    return wavs[0::2], wavs[1::2]


def link_dir(path: Path, wavs: list[Path]) -> Path:
    """A directory of symbolic links to ``wavs`` (kept if it already holds exactly them;
    else made beside it and renamed into place)."""
    if not wavs:
        sys.exit(f"demo: {path}: no audio for this part")
    names = [w.name for w in wavs]
    if len(set(names)) < len(names):
        names = [f"{w.parent.name}-{w.name}" for w in wavs]
    links = dict(zip(names, (w.resolve() for w in wavs)))
    if path.is_dir() and {p.name: p.resolve() for p in path.glob("*.wav")} == links:
        return path
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, target in links.items():
        (tmp / name).symlink_to(target)
    shutil.rmtree(path, ignore_errors=True)
    os.rename(tmp, path)
    return path


def data_sets(args, out: Path) -> DataSets:
    """The scored dir and the tuning dirs (see the module docstring), and the parts of the
    tuning audio for calibration, fine-tuning and its validation (links in OUT/tuning)."""
    dev, train = SHARED / "data" / "ko_wide_dev", SHARED / "data" / "ko_wide_train"
    data = Path(args.data) if args.data else dev if dev.is_dir() else synthesize(out / "synth")
    refs = None
    if (data / "text").is_file() and not args.agreement_only and data.name != "synth":
        from kaldi_compress.io.tables import read_transcripts
        refs = read_transcripts(str(data / "text"))
    if args.calibration:
        scored, tuning = data, [Path(d) for d in args.calibration]
        note = f"tuning on --calibration {', '.join(map(str, tuning))}, scoring on {data}"
    elif not args.data and data == dev and train.is_dir():
        scored, tuning = data, [train]
        note = f"tuning on {train}, scoring on {data}"
    else:
        tune_wavs, score_wavs = split_alternate(wav_paths([data]))
        split = out / "split"
        tuning = [link_dir(split / f"{data.name}-tune", tune_wavs)]
        scored = link_dir(split / f"{data.name}-score", score_wavs)
        if refs:
            refs = {w.stem: refs[w.stem] for w in score_wavs if w.stem in refs}
        note = (f"split {data} (every other file): tuning on {len(tune_wavs)} utterances "
                f"({tuning[0]}), scoring on the other {len(score_wavs)} ({scored})")
    check_held_out(tuning, scored)
    wavs = wav_paths(tuning)
    valid = spread(wavs, max(1, min(args.valid_utts, len(wavs) // 5)))
    held = set(valid)
    fit = [w for w in wavs if w not in held]
    parts = out / "tuning"
    return DataSets(scored, refs, tuning, link_dir(parts / "fit", fit),
                    link_dir(parts / "finetune", spread(fit, args.finetune_utts)),
                    link_dir(parts / "valid", valid), note)


def check_same_sets(out: Path, sets: DataSets, settings: dict) -> None:
    """An output directory keeps the scoring and tuning audio, and the ``settings`` that
    shape its models (how many utterances calibrate and fine-tune), it was started with."""
    path = out / "sets.json"
    now = {"scored_on": str(sets.scored_on), "tuning": [str(d) for d in sets.tuning],
           "sets": sets.note, **settings}
    if path.exists():
        before = json.loads(path.read_text())
        if before != now:
            sys.exit(f"demo: {out} was started with {before}, not {now}: use another --out")
    else:
        atomic_write_text(path, json.dumps(now, ensure_ascii=False, indent=1))


def atomic_write_text(path: Path, text: str) -> None:
    from kaldi_compress.io.files import write_output
    path.parent.mkdir(parents=True, exist_ok=True)
    write_output(str(path), [text.encode("utf-8")])


def synthesize(out: Path) -> Path:
    """A small Korean speech set made with espeak-ng (16 kHz mono wavs)."""
    import subprocess
    from scipy.signal import resample_poly
    if shutil.which("espeak-ng") is None:
        sys.exit("demo: no speech data: ../shared/data/ko_wide_dev is absent and espeak-ng is "
                 "not installed (apt-get install espeak-ng), or pass --data DIR")
    out.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(SYNTH_SENTENCES):
        wav = out / f"synth_{i:02d}.wav"
        if wav.exists():
            continue
        raw = out / f".synth_{i:02d}.raw.wav"
        subprocess.run(["espeak-ng", "-v", "ko", "-s", "150", "-w", str(raw), text], check=True)
        with wave.open(str(raw)) as w:
            rate, data = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16)
        pcm = resample_poly(data.astype(np.float64), 16000, rate) if rate != 16000 else data
        tmp = out / f".synth_{i:02d}.tmp.wav"
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(np.clip(pcm, -32768, 32767).astype(np.int16).tobytes())
        os.replace(tmp, wav)
        raw.unlink()
    return out


# --- one bar for the whole run ------------------------------------------------------------

# Rough seconds of each step on 2 idle cores, for the ETA (n: calibration utterances;
# their features are counted in the first calibrated build).
def build_seconds(system: System, n: int) -> float:
    if system.method == "finetune":
        return 60 * system.options["max_minutes"] + 5
    if system.method == "svd":
        return 10 + 0.8 * n if system.options["data"] else 5
    return {"prepared": 2, "kaldi-svd": 5, "prune": 60 + 1.2 * n, "compress": 120 + 5 * n,
            "tt": 55, "pack": 20}[system.method]


DECODE_SECONDS = 70


class RunBar:
    """One tqdm bar over the run's steps, weighted by their expected seconds: the current
    step and an ETA (the expected seconds left, scaled by how this run has kept to them).
    On a terminal it moves within a step too; otherwise it prints one line a step.
    Steps already done (a resumed run) count as done and are not shown."""

    def __init__(self, steps: dict[str, tuple[float, bool]]):   # label: (weight, done)
        from tqdm import tqdm
        self.steps, self.tty = steps, sys.stderr.isatty()
        self.total = sum(w for w, _ in steps.values())
        self.done = sum(w for w, done in steps.values() if done)
        self.todo = sum(1 for _, done in steps.values() if not done)
        self.count, self.weight, self.label = 0, 0.0, ""
        self.run_weight, self.run_seconds = 0.0, 0.0    # this run's finished steps
        self.step_started = time.monotonic()
        self.bar = tqdm(total=round(self.total), initial=round(self.done), file=sys.stderr
                        if self.tty else open(os.devnull, "w"), position=0, dynamic_ncols=True,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}{postfix}")
        self.lock = threading.Lock()
        self.stop = threading.Event()
        if self.tty:
            threading.Thread(target=self._tick, daemon=True).start()

    def speed(self) -> float:
        """Seconds this run takes per expected second (1 until a minute has been seen)."""
        return self.run_seconds / self.run_weight if self.run_seconds > 60 else 1.0

    def _show(self) -> None:
        into = min((time.monotonic() - self.step_started) / self.speed(), 0.95 * self.weight)
        left = max(0.0, self.total - self.done - into) * self.speed()
        self.bar.n = round(self.done + into)
        self.bar.set_description_str(f"demo [{self.count}/{self.todo}] {self.label}",
                                     refresh=False)
        self.bar.set_postfix_str(f"ETA {time.strftime('%H:%M:%S', time.gmtime(left))}",
                                 refresh=False)
        self.bar.refresh()

    def _tick(self) -> None:
        while not self.stop.wait(2.0):
            with self.lock:
                self._show()

    def start(self, label: str) -> None:
        weight, done = self.steps[label]
        if done:
            return
        with self.lock:
            self.count += 1
            self.label, self.weight, self.step_started = label, weight, time.monotonic()
            self._show()
            if not self.tty:
                print(self.bar, file=sys.stderr, flush=True)

    def finish(self) -> None:
        with self.lock:
            if not self.weight:
                return
            self.run_seconds += time.monotonic() - self.step_started
            self.run_weight += self.weight
            self.done += self.weight
            self.weight = 0.0
            self._show()

    def close(self) -> None:
        self.stop.set()
        with self.lock:
            self.label = "done"
            self._show()
            self.bar.close()
        if not self.tty:
            print(self.bar, file=sys.stderr, flush=True)


def say(msg: str) -> None:
    """A line on stderr that does not break the bars."""
    from tqdm import tqdm
    tqdm.write(msg, file=sys.stderr)


# --- building, decoding, reporting --------------------------------------------------------

class Calibrations:
    """Calibration features, loaded once per run for every calibrated system."""

    def __init__(self, sets: DataSets, max_utts: int):
        self.sets, self.max_utts, self.cal = sets, max_utts, None

    def get(self):
        if self.cal is None:
            from kaldi_compress.compress.calibrate import load_calibration
            from kaldi_compress.evaluate.vosk_decode import vosk_korean_model_dir
            self.cal = load_calibration(vosk_korean_model_dir(), [self.sets.fit],
                                        max_utts=self.max_utts)
        return self.cal


def build(system: System, models: Path, sets: DataSets, cals: Calibrations,
          tuned_on: list[str]) -> dict:
    """Write OUT/models/NAME.mdl (and NAME.json) unless present."""
    from kaldi_compress import read_model, write_model
    from kaldi_compress.evaluate.vosk_decode import vosk_korean_model_dir
    from kaldi_compress.nnet3.edit import prepare_for_test
    out = models / f"{system.name}.mdl"
    info_path = models / f"{system.name}.json"
    if out.exists() and info_path.exists():
        return json.loads(info_path.read_text())
    t = time.perf_counter()
    inner = sys.stderr.isatty()     # inner bars only on a terminal
    extra = {}
    if system.method == "finetune":
        from kaldi_compress.errors import KaldiCompressError
        from kaldi_compress.finetune import FinetuneJob, default_train_options, finetune
        opts = {k: v for k, v in system.options.items() if k != "student"}
        job = FinetuneJob(str(models / "prepared.mdl"),
                          str(models / f"{system.options['student']}.mdl"), str(out),
                          model_dir=str(vosk_korean_model_dir()), dither=0.0,
                          data=[str(sets.finetune)], valid_data=[str(sets.valid)],
                          train=dataclasses.replace(default_train_options(), **opts),
                          resume=Path(f"{out}.ckpt").exists(), progress=inner)
        if job.resume:      # build_seconds then counts this process only
            extra["resumed"] = True
        try:
            result = finetune(job)
        except KaldiCompressError as e:
            sys.exit(f"demo: fine-tuning {system.name} failed: {e}")
        model = read_model(str(out))
        extra["training"] = {
            "epochs": [dataclasses.asdict(e) for e in
                       ([result.start] if result.start else []) + result.epochs],
            "kept_epoch": result.kept_epoch, "steps": result.steps,
            "minutes": round(result.minutes, 2)}
        extra["finetune_utts"] = len(wav_paths([sets.finetune]))
        extra["valid_utts"] = len(wav_paths([sets.valid]))
    elif system.method == "pack":
        from kaldi_compress.io.files import write_output
        from kaldi_compress.pack import pack_model, unpack_model
        model = read_model(str(models / f"{system.options['student']}.mdl"))
        packed, report = pack_model(model, bits=system.options["bits"], peers=False)
        kcz = models / f"{system.name}.kcz"
        write_output(str(kcz), [packed])
        write_output(str(out), [unpack_model(packed, str(kcz))])    # what is decoded
        extra["size_bytes"] = len(packed)                           # what is shipped
        extra["mdl_bytes"] = out.stat().st_size
    else:
        model = read_model(str(vosk_korean_model_dir() / "am" / "final.mdl"))
        prepare_for_test(model.nnet)
        if system.calibrated:
            extra["calibration_utts"] = len(cals.get().utterances)
        if system.method == "kaldi-svd":
            from kaldi_compress.compress.kaldi_svd import apply_svd_kaldi
            apply_svd_kaldi(model.nnet, "*", **system.options)
        elif system.method == "svd":
            from kaldi_compress.compress.svd import SvdOptions, svd_compress
            svd_compress(model.nnet, SvdOptions(
                param_ratio=system.options["param_ratio"],
                calibration=cals.get() if system.calibrated else None, progress=inner))
        elif system.method == "prune":
            from kaldi_compress.compress.prune import PruneOptions, prune_compress
            prune_compress(model.nnet, PruneOptions(param_ratio=system.options["param_ratio"],
                                                    calibration=cals.get(), progress=inner))
        elif system.method == "compress":
            from kaldi_compress.compress.joint import JointOptions, joint_compress
            stages = joint_compress(model.nnet, JointOptions(
                param_ratio=system.options["param_ratio"], calibration=cals.get(),
                progress=inner))
            extra["stages"] = {s.name: {r.name: [r.rank_before, r.rank_after]
                                        for r in s.reports} for s in stages}
        elif system.method == "tt":
            from kaldi_compress.compress.tt_compress import TtOptions, tt_compress
            reports = tt_compress(model.nnet, TtOptions(
                param_ratio=system.options["param_ratio"],
                allow_svd=system.options["allow_svd"], progress=inner))
            # how many layers the budget gave TT, SVD, or left alone
            extra["layers"] = {m: sum(r.method == m for r in reports)
                               for m in ("tt", "svd", "kept")}
        write_model(model, str(out))
    info = {"name": system.name, "method": system.method, "options": system.options,
            "tuned_on": tuned_on, "num_parameters": model.nnet.num_parameters,
            "size_bytes": out.stat().st_size,
            "build_seconds": round(time.perf_counter() - t, 1), **extra}
    atomic_write_text(info_path, json.dumps(info, indent=1))
    return info


def decode_system(name: str, models: Path, decodes: Path, data: Path, jobs: int) -> dict:
    from kaldi_compress.evaluate.vosk_decode import (decode, list_wavs, model_dir_with_am,
                                                     vosk_korean_model_dir)
    path = decodes / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    vdir = model_dir_with_am(vosk_korean_model_dir(), models / f"{name}.mdl",
                             decodes / "vosk" / name)
    t = time.perf_counter()
    r = decode(vdir, list_wavs(data), jobs=jobs, progress=sys.stderr.isatty(),
               desc=f"decode {name}")
    result = {"hyps": r.hyps, "rtf": r.rtf, "audio_seconds": r.audio_seconds,
              "decode_seconds": round(time.perf_counter() - t, 1)}
    atomic_write_text(path, json.dumps(result, ensure_ascii=False, indent=0))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="output directory (default out/demo, with --full "
                    "out/demo-full)")
    ap.add_argument("--data", help="speech dir (*.wav + text) to score on (default "
                    "../shared/data/ko_wide_dev); alone, it is split into a tuning and a "
                    "scoring part")
    ap.add_argument("--calibration", action="append", default=[],
                    help="unlabeled in-domain wav dirs for calibration and fine-tuning "
                    "(default: ../shared/data/ko_wide_train with ko_wide_dev, else the "
                    "tuning part of the split); must not share audio with the scored dir")
    ap.add_argument("--calibration-utts", type=int,
                    help="calibration utterances, spread over the tuning audio (default 20, "
                    "with --full 120: fewer keep the default run short, more calibrate better)")
    ap.add_argument("--finetune-utts", type=int,
                    help="fine-tuning utterances, spread over the tuning audio (default 150; "
                    "with --full 0: all of it but the validation part)")
    ap.add_argument("--valid-utts", type=int, default=30,
                    help="tuning utterances kept apart to pick the fine-tuning's best epoch")
    ap.add_argument("--systems", help="comma-separated subset of the run's system names")
    ap.add_argument("--full", action="store_true",
                    help="the curve: every method at six ratios, each also with 30 minutes of "
                    "distillation (about 14 hours on 2 cores) instead of the default")
    ap.add_argument("--agreement-only", action="store_true",
                    help="ignore transcripts; report agreement with the baseline only")
    ap.add_argument("--jobs", type=int, default=2, help="decoding processes")
    args = ap.parse_args()
    if args.calibration_utts is None:
        args.calibration_utts = 120 if args.full else 20
    if args.finetune_utts is None:
        args.finetune_utts = 0 if args.full else 150
    if args.out is None:
        args.out = str(REPO / "out" / ("demo-full" if args.full else "demo"))
    from kaldi_compress.errors import KaldiCompressError
    try:
        run(args)
    except KaldiCompressError as e:
        sys.exit(f"demo: {e}")


def run(args) -> None:
    out = Path(args.out)
    models, decodes = out / "models", out / "decode"
    models.mkdir(parents=True, exist_ok=True)
    decodes.mkdir(parents=True, exist_ok=True)
    systems = select_systems(default_systems(args.full), args.systems)
    sets = data_sets(args, out)
    check_same_sets(out, sets, {k: getattr(args, k) for k in (
        "full", "calibration_utts", "finetune_utts", "valid_utts")})
    print(f"demo: {sets.note} ({'CER' if sets.refs else 'agreement only'}); output {out}",
          file=sys.stderr)
    by_name = {s.name: s for s in systems}
    n = args.calibration_utts
    steps = {}
    for s in systems:
        steps[f"build {s.name}"] = (build_seconds(s, n), (models / f"{s.name}.json").exists())
        if s.decode:
            steps[f"decode {s.name}"] = (DECODE_SECONDS, (decodes / f"{s.name}.json").exists())
    bar = RunBar(steps)
    cals = Calibrations(sets, args.calibration_utts)
    rows, infos, base_hyps = [], {}, None
    for system in systems:
        read = sets.read_by(system, by_name.get(system.options.get("student")))
        check_held_out(read, sets.scored_on)
        bar.start(f"build {system.name}")
        info = infos[system.name] = build(system, models, sets, cals, sets.tuned_on(read))
        bar.finish()
        check_held_out([Path(d) for d in info["tuned_on"]], sets.scored_on)
        if not system.decode:
            continue
        bar.start(f"decode {system.name}")
        dec = decode_system(system.name, models, decodes, sets.scored_on, args.jobs)
        bar.finish()
        if system.name == "prepared":
            base_hyps = dec["hyps"]
        row = result_row(info, dec, student_info(system, infos, models), sets.refs, base_hyps)
        rows.append(row)
        say(f"demo: {system.name}: {row['num_parameters']} parameters"
            + (f", CER {row['cer']:.2f}" if sets.refs else "")
            + f", agreement CER {row['agreement_cer']:.2f}, RTF {row['rtf']:.3f}")
    bar.close()
    rows = with_earlier_rows(rows, default_systems(args.full), models, decodes, sets, base_hyps)
    base = rows[0]
    for r in rows:
        r["param_ratio"] = r["num_parameters"] / base["num_parameters"]
    atomic_write_text(out / "results.json", json.dumps(
        {"scored_on": str(sets.scored_on), "sets": sets.note, "systems": rows},
        ensure_ascii=False, indent=1))
    atomic_write_text(out / "results.md", results_table(rows, bool(sets.refs), sets.scored_on))
    plot(rows, bool(sets.refs), sets.scored_on, out / "cer_vs_params.png")
    if any(r["method"] == "pack" for r in rows):    # packs differ in bytes, not parameters
        plot(rows, bool(sets.refs), sets.scored_on, out / "cer_vs_size.png", x="bytes")
    print((out / "results.md").read_text())


def student_info(system: System, infos: dict, models: Path) -> dict:
    """The build record of a fine-tuned or packed system's student ({} if none)."""
    name = system.options.get("student")
    if not name:
        return {}
    if name not in infos and (models / f"{name}.json").exists():
        infos[name] = json.loads((models / f"{name}.json").read_text())
    return infos.get(name, {})


def result_row(info: dict, dec: dict, student: dict, refs: dict | None,
               base_hyps: dict) -> dict:
    """One system's row: its build record, RTF, CER (and the interval of its difference
    from the baseline) and agreement with the baseline's hypotheses."""
    from kaldi_compress.evaluate.scoring import korean_normalize, score
    row = dict(info, rtf=dec["rtf"])
    if "layers" in student:
        row["layers"] = student["layers"]       # fine-tuning keeps the structure
    if refs:
        s = score(refs, dec["hyps"], unit="char", normalize=korean_normalize)
        row["cer"], row["cer_line"] = s.rate, s.format().splitlines()[0]
        row["delta_cer_ci"] = delta_interval(refs, base_hyps, dec["hyps"])
    agree = score(base_hyps, dec["hyps"], unit="char", normalize=korean_normalize)
    row["agreement_cer"] = agree.rate
    return row


def with_earlier_rows(rows: list[dict], run: list[System], models: Path, decodes: Path,
                      sets: "DataSets", base_hyps: dict) -> list[dict]:
    """``rows`` and those of the run's other systems already built and decoded in this
    output directory (an earlier ``--systems`` subset), in the run's order: a curve built
    in pieces is reported whole."""
    done = {r["name"]: r for r in rows}
    out, infos = [], {}
    for system in run:
        if system.name in done:
            out.append(done[system.name])
            continue
        info_path, dec_path = models / f"{system.name}.json", decodes / f"{system.name}.json"
        if not (system.decode and info_path.exists() and dec_path.exists()):
            continue
        out.append(result_row(json.loads(info_path.read_text()),
                              json.loads(dec_path.read_text()),
                              student_info(system, infos, models), sets.refs, base_hyps))
    return out


def delta_interval(refs: dict, base: dict, hyps: dict) -> list[float]:
    """The 95% paired-bootstrap interval of CER(hyps) - CER(base), in points
    (``kaldi-compress wer-bootci``'s last line): what the scored set's size allows."""
    import numpy as np
    from kaldi_compress.evaluate.bootstrap import difference_interval, utterance_errors
    from kaldi_compress.evaluate.scoring import korean_normalize
    errors, lengths = utterance_errors(refs, [base, hyps], "char", korean_normalize, "present")
    _, lo, hi = difference_interval(errors[0], errors[1], lengths, 10000,
                                    np.random.default_rng(0))
    return [100 * lo, 100 * hi]


def series_of(name: str) -> str:
    """The plot's line for a system of the curve: its method, with or without distillation
    (``compress-0.3-finetuned`` -> ``compress + distillation``); "" for the others."""
    base = name.removesuffix("-finetuned")
    method = base.rsplit("-", 1)[0]
    if method not in ("svd", "prune", "compress"):
        return ""
    return method + (" + distillation" if base != name else "")


def plot(rows: list[dict], with_cer: bool, scored_on: Path, png: Path,
         x: str = "parameters") -> None:
    """The error-vs-parameters (or -file bytes) plot, titled with the scored dir (temp +
    rename)."""
    from kaldi_compress.evaluate.plots import Point, wer_vs_params_plot
    from matplotlib.figure import Figure
    from matplotlib.image import imread
    metric = "CER" if with_cer else "agreement CER"
    points = [Point(r["name"], r["num_parameters"], r["cer"] if with_cer else r["agreement_cer"],
                    r["size_bytes"], r["rtf"], series_of(r["name"])) for r in rows]
    tmp = png.with_name(f".{png.stem}.tmp.png")
    wer_vs_params_plot(points, tmp, metric=metric, x=x)
    img = imread(tmp)
    height, width = img.shape[:2]
    strip = 30                        # pixels for the title above the plot
    fig = Figure(figsize=(width / 100, (height + strip) / 100), dpi=100)
    fig.figimage(img, 0, 0)
    fig.text(0.5, 1 - strip / 2 / (height + strip), f"{metric}, scored on {scored_on.name} "
             "(no system was tuned on it)", ha="center", va="center", fontsize=11)
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, png)


def results_table(rows: list[dict], with_cer: bool, scored_on: Path) -> str:
    """Markdown: one row per system, ratios against the prepared model."""
    base = rows[0]
    head = ["system", "parameters", "ratio", "size (MB)", "tuned on"]
    head += ["CER %", "ΔCER", "ΔCER 95% CI"] if with_cer else []
    head += ["agreement CER %", "RTF", "RTF ratio", "build (s)"]
    with_layers = any("layers" in r for r in rows)
    head += ["layers TT/SVD/kept"] if with_layers else []
    what = "CER against the transcripts" if with_cer else "agreement with the prepared model only"
    ci = (" ΔCER 95% CI: paired bootstrap over the scored utterances (`kaldi-compress "
          "wer-bootci`), the spread a set of this size leaves.") if with_cer else ""
    lines = [f"Scored on `{scored_on}` ({what}); decoded by Vosk. No system was tuned "
             f"(calibrated or fine-tuned) on the scored audio.{ci}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"], f"{r['num_parameters']:,}", f"{r['param_ratio']:.3f}",
                 f"{r['size_bytes'] / 1e6:.2f}",
                 ", ".join(Path(d).name for d in r["tuned_on"]) or "-"]
        if with_cer:
            ci = r.get("delta_cer_ci") if r is not base else None
            cells += [f"{r['cer']:.2f}", f"{r['cer'] - base['cer']:+.2f}",
                      f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""]
        cells += [f"{r['agreement_cer']:.2f}", f"{r['rtf']:.3f}", f"{r['rtf'] / base['rtf']:.2f}",
                  f"{r['build_seconds']:.0f}"]
        if with_layers:
            n = r.get("layers")
            cells.append(f"{n['tt']}/{n['svd']}/{n['kept']}" if n else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
