"""How closely one network's outputs follow another's: a fast proxy for WER.

Over all frames t of all utterances, for base outputs b_t and other outputs o_t:

- SNR (dB) = 10 log10(sum_t |b_t|^2 / sum_t |b_t - o_t|^2) (inf when equal);
- agreement (%) = share of frames whose best pdf (argmax) is the same;
- KL = mean_t KL(softmax(b_t) || softmax(o_t)), in nats per frame.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import KaldiCompressError
from ..frontend.model_dir import ModelDirFrontEnd
from ..nnet3 import Nnet
from .chunking import ComputeOptions, SimpleComputer


@dataclass
class Fidelity:
    utterances: int
    frames: int
    snr_db: float
    agreement: float
    kl: float

    def as_dict(self) -> dict:
        return asdict(self)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


def compare_outputs(base: list[np.ndarray], other: list[np.ndarray]) -> Fidelity:
    """Fidelity of ``other`` to ``base`` (lists of per-utterance output matrices)."""
    if len(base) != len(other) or any(b.shape != o.shape for b, o in zip(base, other)):
        raise KaldiCompressError("the two networks' outputs have different shapes")
    if not base:
        raise KaldiCompressError("no utterances to compare")
    signal = noise = kl = 0.0
    agree = frames = 0
    for b, o in zip(base, other):
        b64, o64 = b.astype(np.float64), o.astype(np.float64)
        signal += float((b64 ** 2).sum())
        noise += float(((b64 - o64) ** 2).sum())
        agree += int((b.argmax(1) == o.argmax(1)).sum())
        lb, lo = _log_softmax(b), _log_softmax(o)
        kl += float((np.exp(lb) * (lb - lo)).sum())
        frames += len(b)
    snr = math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal > 0 else -math.inf
    return Fidelity(len(base), frames, snr, 100.0 * agree / frames, max(kl / frames, 0.0))


def data_wavs(data_dir: str | Path) -> list[Path]:
    """The ``*.wav`` files of a data directory, sorted by name."""
    wavs = sorted(Path(data_dir).glob("*.wav"))
    if not wavs:
        raise KaldiCompressError(f"{data_dir}: no *.wav files")
    return wavs


def fidelity(base: Nnet, other: Nnet, model_dir: str | Path, data_dir: str | Path,
             frames_per_chunk: int = 50, frame_subsampling_factor: int | None = None,
             dither: float | None = None) -> Fidelity:
    """Run both networks on the same features -- the model directory's front end
    (see :class:`ModelDirFrontEnd`) on every wav in ``data_dir`` -- with
    nnet3-compute's chunking, and compare their outputs."""
    front = ModelDirFrontEnd(model_dir, dither)
    opts = ComputeOptions(
        frame_subsampling_factor=frame_subsampling_factor or front.frame_subsampling_factor,
        frames_per_chunk=frames_per_chunk, online_ivector_period=front.ivector_period)
    utts = [front.features(w) for w in data_wavs(data_dir)]
    outs = [SimpleComputer(net, ComputeOptions(**asdict(opts))).compute_many(utts)
            for net in (base, other)]
    return compare_outputs(*outs)
