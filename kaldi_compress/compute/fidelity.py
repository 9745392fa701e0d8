"""How closely one network's outputs follow another's: a fast proxy for WER.

Over all frames t of all utterances, for base outputs b_t and other outputs o_t:

- SNR (dB) = 10 log10(sum_t |b_t|^2 / sum_t |b_t - o_t|^2) (inf when equal);
- agreement (%) = share of frames whose best pdf (argmax) is the same;
- KL = mean_t KL(softmax(b_t) || softmax(o_t)), in nats per frame.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from itertools import islice
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


class _Sums:
    """Running sums of the three metrics over pairs of output matrices."""

    def __init__(self) -> None:
        self.signal = self.noise = self.kl = 0.0
        self.agree = self.frames = self.utterances = 0

    def add(self, b: np.ndarray, o: np.ndarray) -> None:
        if b.shape != o.shape:
            raise KaldiCompressError("the two networks' outputs have different shapes")
        b64, o64 = b.astype(np.float64), o.astype(np.float64)
        self.signal += float((b64 ** 2).sum())
        self.noise += float(((b64 - o64) ** 2).sum())
        self.agree += int((b.argmax(1) == o.argmax(1)).sum())
        lb, lo = _log_softmax(b), _log_softmax(o)
        self.kl += float((np.exp(lb) * (lb - lo)).sum())
        self.frames += len(b)
        self.utterances += 1

    def result(self) -> Fidelity:
        if not self.utterances:
            raise KaldiCompressError("no utterances to compare")
        snr = (math.inf if self.noise == 0 else
               10 * math.log10(self.signal / self.noise) if self.signal > 0 else -math.inf)
        return Fidelity(self.utterances, self.frames, snr, 100.0 * self.agree / self.frames,
                        max(self.kl / self.frames, 0.0))


def compare_outputs(base: list[np.ndarray], other: list[np.ndarray]) -> Fidelity:
    """Fidelity of ``other`` to ``base`` (lists of per-utterance output matrices)."""
    if len(base) != len(other):
        raise KaldiCompressError("the two networks' outputs have different shapes")
    sums = _Sums()
    for b, o in zip(base, other):
        sums.add(b, o)
    return sums.result()


def compare_networks(base: Nnet, other: Nnet,
                     utterances: Iterable[tuple[np.ndarray, np.ndarray | None]],
                     opts: ComputeOptions, batch: int = 16) -> Fidelity:
    """Fidelity of ``other`` to ``base`` on (features, online i-vectors) pairs, run with
    nnet3-compute's chunking ``opts``; ``batch`` utterances at a time, so that memory
    does not grow with the number of utterances."""
    computers = [SimpleComputer(net, ComputeOptions(**asdict(opts))) for net in (base, other)]
    sums = _Sums()
    it = iter(utterances)
    while chunk := list(islice(it, batch)):
        for b, o in zip(*(c.compute_many(chunk) for c in computers)):
            sums.add(b, o)
    return sums.result()


def data_wavs(data_dir: str | Path) -> list[Path]:
    """The ``*.wav`` files of a data directory, sorted by name."""
    wavs = sorted(Path(data_dir).glob("*.wav"))
    if not wavs:
        raise KaldiCompressError(f"{data_dir}: no *.wav files")
    return wavs


def fidelity(base: Nnet, other: Nnet, model_dir: str | Path, data_dir: str | Path,
             frames_per_chunk: int = 50, frame_subsampling_factor: int | None = None,
             dither: float | None = None) -> Fidelity:
    """Both networks on the same features -- the model directory's front end (see
    :class:`ModelDirFrontEnd`) on every wav in ``data_dir`` -- compared."""
    front = ModelDirFrontEnd(model_dir, dither)
    opts = ComputeOptions(
        frame_subsampling_factor=frame_subsampling_factor or front.frame_subsampling_factor,
        frames_per_chunk=frames_per_chunk, online_ivector_period=front.ivector_period)
    return compare_networks(base, other, (front.features(w) for w in data_wavs(data_dir)), opts)


def fidelity_tables(base: Nnet, other: Nnet, feats: str, ivectors: str = "",
                    ivector_period: int = 0, frames_per_chunk: int = 50,
                    frame_subsampling_factor: int = 1, max_utts: int = 0) -> Fidelity:
    """Both networks on the utterances of a Kaldi feature table, as ``nnet3-compute``
    reads them (``scp:data/test_hires/feats.scp``, ``ark:... |``), with online i-vectors
    from another table (one row per ``ivector_period`` frames); empty utterances and
    those without i-vectors are skipped (with a warning); the first ``max_utts`` used
    (0: all), the table read as the comparison goes."""
    from ..io.tables import ivector_reader, read_matrices, usable_utterances
    if max_utts < 0:
        raise KaldiCompressError(f"--max-utts must be >= 0, got {max_utts}")
    table = ivector_reader(ivectors, ivector_period)
    items = ((key, len(m), m) for key, m in read_matrices(feats))
    utts = ((m, None if table is None else table[key])
            for key, m in usable_utterances(items, table, feats, limit=max_utts))
    opts = ComputeOptions(frame_subsampling_factor=frame_subsampling_factor,
                          frames_per_chunk=frames_per_chunk,
                          online_ivector_period=ivector_period if ivectors else 0)
    return compare_networks(base, other, utts, opts)
