"""The embedded end-to-end demo: compress the Korean Vosk model, decode, report.

For each system of the sweep (the prepared model; Kaldi's own apply-svd; SVD at
several parameter budgets, weights-only and data-aware; tensor-train and
fine-tuned variants when available) it writes ``OUT/models/NAME.mdl``, decodes
the speech directory with Vosk (the original graph; only the acoustic model
changes), and scores it: CER against the transcripts (Korean: characters, spaces
removed) and, always, "agreement" -- the CER of the system's hypotheses against
the prepared model's.  Results go to ``OUT/results.md`` (table),
``OUT/results.json`` and ``OUT/cer_vs_params.png``.

Resumable: a finished model or decode is not redone; every file is written
through a temporary file and a rename, so an interrupted run leaves no broken
file.  Without ``../shared/data/ko_wide_dev`` (research data end users do not
have) it synthesises a small Korean set with espeak-ng and reports agreement only.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
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
    method: str          # prepared | kaldi-svd | svd | prune | tt | finetune
    options: dict


def default_systems(quick: bool) -> list[System]:
    """The sweep: the baseline, Kaldi's apply-svd, SVD budgets (weights-only and
    data-aware), tensor-train, and a fine-tuned SVD model."""
    ratios = [0.75, 0.5] if quick else [0.9, 0.75, 0.6, 0.5, 0.4]
    out = [System("prepared", "prepared", {}),
           System("kaldi-apply-svd-e0.9", "kaldi-svd",
                  {"energy_threshold": 0.9, "shrinkage_threshold": 0.8}),
           System("svd-weights-0.75", "svd", {"param_ratio": 0.75, "data": False})]
    out += [System(f"svd-{r}", "svd", {"param_ratio": r, "data": True}) for r in ratios]
    out += [System(f"prune-{r}", "prune", {"param_ratio": r}) for r in (0.9, 0.8)]
    out += [System(f"compress-{r}", "compress", {"param_ratio": r}) for r in (0.6, 0.3)]
    tune = {"max_minutes": 25 if not quick else 5}
    out += [System("svd-0.5-finetuned", "finetune", {"student": "svd-0.5", **tune}),
            System("tt-0.75", "tt", {"param_ratio": 0.75, "allow_svd": True}),
            System("tt-0.75-finetuned", "finetune", {"student": "tt-0.75", **tune}),
            System("tt-only-0.75", "tt", {"param_ratio": 0.75, "allow_svd": False}),
            System("tt-only-0.75-finetuned", "finetune", {"student": "tt-only-0.75", **tune})]
    if not quick:
        out += [System("tt-0.5", "tt", {"param_ratio": 0.5, "allow_svd": True}),
                System("tt-only-0.9", "tt", {"param_ratio": 0.9, "allow_svd": False})]
    return out


def atomic_write_text(path: Path, text: str) -> None:
    from kaldi_compress.io.files import write_output
    path.parent.mkdir(parents=True, exist_ok=True)
    write_output(str(path), [text.encode("utf-8")])


def prepare_data(args) -> tuple[Path, dict[str, str] | None]:
    """(speech dir, transcripts or None): --data, the shared Korean set, or a synthetic one."""
    if args.data:
        data = Path(args.data)
    elif (SHARED / "data" / "ko_wide_dev").is_dir():
        data = SHARED / "data" / "ko_wide_dev"
    else:
        data = synthesize(Path(args.out) / "synth")
    from kaldi_compress.io.tables import read_transcripts
    text = data / "text"
    refs = read_transcripts(str(text)) if text.is_file() and not args.agreement_only else None
    if data.parent.name == "synth" or data.name == "synth":
        refs = None
    return data, refs


def synthesize(out: Path) -> Path:
    """A small Korean speech set made with espeak-ng (16 kHz mono wavs)."""
    import shutil
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


def build(system: System, args, models: Path, calibration_dirs: list[Path]) -> dict:
    """Write OUT/models/NAME.mdl (and NAME.json) unless present."""
    from kaldi_compress import read_model, write_model
    from kaldi_compress.evaluate.vosk_decode import vosk_korean_model_dir
    from kaldi_compress.nnet3.edit import prepare_for_test
    out = models / f"{system.name}.mdl"
    info_path = models / f"{system.name}.json"
    if out.exists() and info_path.exists():
        return json.loads(info_path.read_text())
    t = time.perf_counter()
    extra = {}
    if system.method == "finetune":
        from kaldi_compress.errors import KaldiCompressError
        from kaldi_compress.finetune import FinetuneJob, default_train_options, finetune
        opts = {k: v for k, v in system.options.items() if k != "student"}
        job = FinetuneJob(str(models / "prepared.mdl"),
                          str(models / f"{system.options['student']}.mdl"), str(out),
                          model_dir=str(vosk_korean_model_dir()), dither=0.0,
                          data=[str(d) for d in calibration_dirs],
                          train=dataclasses.replace(default_train_options(), **opts),
                          resume=Path(f"{out}.ckpt").exists(), progress=sys.stderr.isatty())
        try:
            finetune(job)
        except KaldiCompressError as e:
            sys.exit(f"demo: fine-tuning {system.name} failed: {e}")
        model = read_model(str(out))
    else:
        model = read_model(str(vosk_korean_model_dir() / "am" / "final.mdl"))
        prepare_for_test(model.nnet)
        if system.method == "kaldi-svd":
            from kaldi_compress.compress.kaldi_svd import apply_svd_kaldi
            apply_svd_kaldi(model.nnet, "*", **system.options)
        elif system.method == "svd":
            from kaldi_compress.compress.calibrate import load_calibration
            from kaldi_compress.compress.svd import SvdOptions, svd_compress
            cal = load_calibration(vosk_korean_model_dir(), calibration_dirs,
                                   max_utts=args.calibration_utts) \
                if system.options["data"] else None
            svd_compress(model.nnet, SvdOptions(param_ratio=system.options["param_ratio"],
                                                calibration=cal, progress=True))
        elif system.method == "prune":
            from kaldi_compress.compress.calibrate import load_calibration
            from kaldi_compress.compress.prune import PruneOptions, prune_compress
            cal = load_calibration(vosk_korean_model_dir(), calibration_dirs,
                                   max_utts=args.calibration_utts)
            prune_compress(model.nnet, PruneOptions(param_ratio=system.options["param_ratio"],
                                                    calibration=cal, progress=True))
        elif system.method == "compress":
            from kaldi_compress.compress.calibrate import load_calibration
            from kaldi_compress.compress.joint import JointOptions, joint_compress
            cal = load_calibration(vosk_korean_model_dir(), calibration_dirs,
                                   max_utts=args.calibration_utts)
            stages = joint_compress(model.nnet, JointOptions(
                param_ratio=system.options["param_ratio"], calibration=cal, progress=True))
            extra["stages"] = {s.name: {r.name: [r.rank_before, r.rank_after]
                                        for r in s.reports} for s in stages}
        elif system.method == "tt":
            from kaldi_compress.compress.tt_compress import TtOptions, tt_compress
            reports = tt_compress(model.nnet, TtOptions(
                param_ratio=system.options["param_ratio"],
                allow_svd=system.options["allow_svd"], progress=True))
            # how many layers the budget gave TT, SVD, or left alone
            extra["layers"] = {m: sum(r.method == m for r in reports)
                               for m in ("tt", "svd", "kept")}
        write_model(model, str(out))
    info = {"name": system.name, "method": system.method, "options": system.options,
            "num_parameters": model.nnet.num_parameters, "size_bytes": out.stat().st_size,
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
    r = decode(vdir, list_wavs(data), jobs=jobs, progress=True, desc=f"decode {name}")
    result = {"hyps": r.hyps, "rtf": r.rtf, "audio_seconds": r.audio_seconds}
    atomic_write_text(path, json.dumps(result, ensure_ascii=False, indent=0))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "out" / "demo"))
    ap.add_argument("--data", help="speech dir (*.wav + text); default ../shared/data/ko_wide_dev")
    ap.add_argument("--calibration", action="append", default=[],
                    help="unlabeled in-domain wav dirs for data-aware SVD, pruning and "
                    "fine-tuning (default: ../shared/data/ko_wide_train when present, else "
                    "the speech dir itself -- transductive, with a warning)")
    ap.add_argument("--calibration-utts", type=int, default=120)
    ap.add_argument("--finetune-data", action="append", default=[],
                    help="unlabeled wav dirs for fine-tuning (default: the calibration dirs "
                    "and ../shared/data/kspon_ko when present)")
    ap.add_argument("--systems", help="comma-separated subset of the sweep's system names")
    ap.add_argument("--quick", action="store_true", help="a shorter sweep")
    ap.add_argument("--agreement-only", action="store_true",
                    help="ignore transcripts; report agreement with the baseline only")
    ap.add_argument("--jobs", type=int, default=2, help="decoding processes")
    args = ap.parse_args()

    from kaldi_compress.evaluate.plots import Point, wer_vs_params_plot
    from kaldi_compress.evaluate.scoring import korean_normalize, score
    out = Path(args.out)
    models, decodes = out / "models", out / "decode"
    models.mkdir(parents=True, exist_ok=True)
    decodes.mkdir(parents=True, exist_ok=True)
    data, refs = prepare_data(args)
    train = SHARED / "data" / "ko_wide_train"
    cal_dirs = [Path(d) for d in args.calibration] or ([train] if train.is_dir() else [data])
    if data in cal_dirs:
        print("demo: warning: calibrating on the speech that is scored (transductive); "
              "give --calibration with other audio of the same domain", file=sys.stderr)
    tune_dirs = [Path(d) for d in args.finetune_data] or cal_dirs + \
        [d for d in [SHARED / "data" / "kspon_ko"] if d.is_dir() and d not in cal_dirs]
    systems = default_systems(args.quick)
    if args.systems:
        wanted = args.systems.split(",")
        systems = [s for s in systems if s.name in wanted or s.name == "prepared"]
    print(f"demo: speech {data} ({'CER' if refs else 'agreement only'}), "
          f"calibration {', '.join(map(str, cal_dirs))}, output {out}", file=sys.stderr)
    rows = []
    base_hyps = None
    for system in systems:
        info = build(system, args, models, tune_dirs if system.method == "finetune" else cal_dirs)
        dec = decode_system(system.name, models, decodes, data, args.jobs)
        if system.name == "prepared":
            base_hyps = dec["hyps"]
        row = dict(info, rtf=dec["rtf"])
        student = next((r for r in rows if r["name"] == system.options.get("student")), {})
        if "layers" in student:
            row["layers"] = student["layers"]       # fine-tuning keeps the structure
        if refs:
            s = score(refs, dec["hyps"], unit="char", normalize=korean_normalize)
            row["cer"], row["cer_line"] = s.rate, s.format().splitlines()[0]
        agree = score(base_hyps, dec["hyps"], unit="char", normalize=korean_normalize)
        row["agreement_cer"] = agree.rate
        rows.append(row)
        print(f"demo: {system.name}: {row['num_parameters']} parameters"
              + (f", CER {row['cer']:.2f}" if refs else "")
              + f", agreement CER {row['agreement_cer']:.2f}, RTF {row['rtf']:.3f}", file=sys.stderr)
    base = rows[0]
    for r in rows:
        r["param_ratio"] = r["num_parameters"] / base["num_parameters"]
    atomic_write_text(out / "results.json", json.dumps({"data": str(data), "systems": rows},
                                                       ensure_ascii=False, indent=1))
    atomic_write_text(out / "results.md", results_table(rows, bool(refs), data))
    metric = "CER" if refs else "agreement CER"
    points = [Point(r["name"], r["num_parameters"], r["cer"] if refs else r["agreement_cer"],
                    r["size_bytes"], r["rtf"]) for r in rows]
    wer_vs_params_plot(points, out / "cer_vs_params.png", metric=metric)
    print((out / "results.md").read_text())


def results_table(rows: list[dict], with_cer: bool, data: Path) -> str:
    """Markdown: one row per system, ratios against the prepared model."""
    base = rows[0]
    head = ["system", "parameters", "ratio", "size (MB)"]
    head += ["CER %", "ΔCER"] if with_cer else []
    head += ["agreement CER %", "RTF", "RTF ratio", "build (s)"]
    with_layers = any("layers" in r for r in rows)
    head += ["layers TT/SVD/kept"] if with_layers else []
    lines = [f"Speech: `{data}` ({'CER against the transcripts' if with_cer else 'agreement with the prepared model only'}); decoded by Vosk.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"], f"{r['num_parameters']:,}", f"{r['param_ratio']:.3f}",
                 f"{r['size_bytes'] / 1e6:.2f}"]
        if with_cer:
            cells += [f"{r['cer']:.2f}", f"{r['cer'] - base['cer']:+.2f}"]
        cells += [f"{r['agreement_cer']:.2f}", f"{r['rtf']:.3f}", f"{r['rtf'] / base['rtf']:.2f}",
                  f"{r['build_seconds']:.0f}"]
        if with_layers:
            n = r.get("layers")
            cells.append(f"{n['tt']}/{n['svd']}/{n['kept']}" if n else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
