"""Activation statistics for data-aware truncation.

For each compressible unit we need the second moment C = E[x x^T] and mean of the
vector its truncation acts on -- a layer's input (``affine`` units) or a bottleneck
producer's output h (``bottleneck`` units) -- and the standard deviation of each
of its outputs y (the layer's, or each consumer's), so that errors are measured
per output in units of that output's own spread: d = 1 / std(y), which is what a
following BatchNorm does.  The network is run over calibration audio exactly as
nnet3-compute would (features and online i-vectors from the model directory's
front end, chunks with the model's frame subsampling), and the statistics are
summed over every frame the network computes.  Where the unit's outputs have a
bias, truncation works on the centred input (covariance instead of second moment)
and the bias absorbs the mean exactly (see :mod:`.layers`).  ``tdnn`` units (a
multi-offset layer on its own) keep the weights-only truncation.

Closed loop (:func:`closed_loop_stats`): when the units before u are already
compressed, u's input is x_c rather than the original x_o.  Its new parameters
should then reproduce the original outputs from x_c: the target map becomes the
regression of W x_o on x_c, W Cov(x_o, x_c) Cov(x_c)^{-1}, so each layer also
corrects the errors of the layers below it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import KaldiCompressError
from ..nnet3 import Nnet
from .layers import Unit, find_units, offsets


@dataclass
class UnitStats:
    """Calibration statistics of one unit (its input x and output spreads)."""
    moment: np.ndarray        # E[x x^T] of what the truncation acts on
    mean: np.ndarray          # E[x]
    row_weight: np.ndarray    # 1 / std of each row of the unit's matrix (its output)
    cross: np.ndarray | None = None        # closed loop: Cov(x_o, x) with the original x_o
    target_mean: np.ndarray | None = None  # closed loop: E[x_o]

    def covariance(self) -> np.ndarray:
        return self.moment - np.outer(self.mean, self.mean)


@dataclass
class Calibration:
    """Calibration utterances (features, online i-vectors) and how to chunk them."""
    utterances: list[tuple[np.ndarray, np.ndarray | None]]
    compute_options: object = field(repr=False)   # compute.chunking.ComputeOptions

    def run(self, nnet: Nnet, observer=None) -> list[np.ndarray]:
        """The network's outputs; ``observer(node, layer_input, output)`` sees every step."""
        from ..compute.chunking import ComputeOptions, SimpleComputer
        computer = SimpleComputer(nnet, ComputeOptions(**vars(self.compute_options)))
        computer.forward.observer = observer
        outs = []
        for i in range(0, len(self.utterances), 8):
            outs.extend(computer.compute_many(self.utterances[i:i + 8]))
        return outs


def load_calibration(model_dir: str | Path, data_dirs: list[str | Path], max_utts: int = 100,
                     dither: float | None = 0.0, progress: bool | None = None) -> Calibration:
    """Features of up to ``max_utts`` wavs (shared out over ``data_dirs``)."""
    from ..compute.chunking import ComputeOptions
    from ..compute.pipeline import ModelDirFrontEnd
    front = ModelDirFrontEnd(model_dir, dither)
    per_dir = max(1, max_utts // max(1, len(data_dirs)))
    wavs = [w for d in data_dirs for w in list_audio(d, per_dir)]
    if progress is None:
        progress = sys.stderr.isatty()
    it = wavs
    if progress:
        from tqdm import tqdm
        it = tqdm(wavs, desc="features", unit="utt", file=sys.stderr, leave=False)
    utts = [front.features(w) for w in it]
    return Calibration(utts, ComputeOptions(
        frame_subsampling_factor=front.frame_subsampling_factor, frames_per_chunk=51,
        online_ivector_period=front.ivector_period))


def list_audio(data_dir: str | Path, max_utts: int) -> list[Path]:
    wavs = sorted(Path(data_dir).glob("*.wav"))
    if not wavs:
        raise KaldiCompressError(f"{data_dir}: no .wav files for calibration")
    return wavs[:max_utts] if max_utts > 0 else wavs


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).to(torch.float64)


class MomentAccumulator:
    """Sums x x^T and x of selected node inputs/outputs and the per-dimension first
    and second moments of selected node outputs (float64), over all rows."""

    def __init__(self, inputs_of: set[str], outputs_of: set[str], diag_of: set[str]):
        self.inputs_of, self.outputs_of, self.diag_of = inputs_of, outputs_of, diag_of
        self.sums: dict[str, torch.Tensor] = {}
        self.firsts: dict[str, torch.Tensor] = {}
        self.diag: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.counts: dict[str, int] = {}

    def __call__(self, node: str, layer_input: torch.Tensor, output: torch.Tensor) -> None:
        if node in self.inputs_of or node in self.outputs_of:
            x = _rows(layer_input if node in self.inputs_of else output)
            self.sums[node] = self.sums.get(node, 0) + x.T @ x
            self.firsts[node] = self.firsts.get(node, 0) + x.sum(0)
            self.counts[node] = self.counts.get(node, 0) + x.shape[0]
        if node in self.diag_of:
            y = _rows(output)
            s1, s2 = self.diag.get(node, (0, 0))
            self.diag[node] = (s1 + y.sum(0), s2 + (y * y).sum(0))
            self.counts["<out>" + node] = self.counts.get("<out>" + node, 0) + y.shape[0]

    def moment(self, node: str) -> np.ndarray:
        return (self.sums[node] / max(self.counts[node], 1)).numpy()

    def mean(self, node: str) -> np.ndarray:
        return (self.firsts[node] / max(self.counts[node], 1)).numpy()

    def inverse_std(self, node: str) -> np.ndarray:
        n = max(self.counts["<out>" + node], 1)
        s1, s2 = self.diag[node]
        var = (s2 / n - (s1 / n) ** 2).numpy()
        return 1.0 / np.sqrt(np.maximum(var, 1e-8 * max(float(var.max()), 1e-30)))

    def unit_stats(self, nnet: Nnet, unit: Unit) -> UnitStats:
        if unit.kind == "bottleneck":
            d = [np.tile(self.inverse_std(c), len(offsets(nnet.components[nnet.node(c).component])))
                 for c in unit.consumers]
            return UnitStats(self.moment(unit.node), self.mean(unit.node), np.concatenate(d))
        return UnitStats(self.moment(unit.node), self.mean(unit.node), self.inverse_std(unit.node))


def data_units(nnet: Nnet) -> list[Unit]:
    """The units that data-aware truncation handles."""
    return [u for u in find_units(nnet) if u.kind in ("affine", "bottleneck")]


def unit_statistics(nnet: Nnet, calibration: Calibration) -> dict[str, UnitStats]:
    """Open-loop statistics per unit node (see the module docstring)."""
    units = data_units(nnet)
    acc = MomentAccumulator({u.node for u in units if u.kind == "affine"},
                            {u.node for u in units if u.kind == "bottleneck"},
                            {u.node for u in units if u.kind == "affine"}
                            | {c for u in units for c in u.consumers})
    calibration.run(nnet, acc)
    return {u.node: acc.unit_stats(nnet, u) for u in units}


class Recorder:
    """Keeps, in call order, the rows a unit's truncation acts on (float32)."""

    def __init__(self, wanted: dict[str, str]):
        self.wanted = wanted            # node -> "input" | "output"
        self.rows: dict[str, list[torch.Tensor]] = {n: [] for n in wanted}

    def __call__(self, node: str, layer_input: torch.Tensor, output: torch.Tensor) -> None:
        if node in self.wanted:
            x = layer_input if self.wanted[node] == "input" else output
            self.rows[node].append(x.reshape(-1, x.shape[-1]).to(torch.float32).clone())


class CrossAccumulator:
    """Cov(x_o, x_c), E[x_c x_c^T], E[x_c] of one node against recorded original rows."""

    def __init__(self, node: str, which: str, original: list[torch.Tensor]):
        self.node, self.which, self.original = node, which, original
        self.i, self.n = 0, 0
        self.sxx = self.sox = self.sx = self.so = 0

    def __call__(self, node: str, layer_input: torch.Tensor, output: torch.Tensor) -> None:
        if node != self.node:
            return
        x = _rows(layer_input if self.which == "input" else output)
        o = self.original[self.i].to(torch.float64)
        self.i += 1
        if o.shape != x.shape:
            raise KaldiCompressError(f"closed-loop calibration: node {node} computed "
                                     f"{x.shape[0]} rows, the original {o.shape[0]}")
        self.sxx = self.sxx + x.T @ x
        self.sox = self.sox + o.T @ x
        self.sx, self.so, self.n = self.sx + x.sum(0), self.so + o.sum(0), self.n + x.shape[0]

    def stats(self, open_loop: UnitStats) -> UnitStats:
        n = max(self.n, 1)
        mean, target = (self.sx / n).numpy(), (self.so / n).numpy()
        cross = (self.sox / n).numpy() - np.outer(target, mean)
        return UnitStats((self.sxx / n).numpy(), mean, open_loop.row_weight, cross, target)


def record_original(nnet: Nnet, calibration: Calibration, units: list[Unit]) -> Recorder:
    rec = Recorder({u.node: "input" if u.kind == "affine" else "output" for u in units})
    calibration.run(nnet, rec)
    return rec


def closed_loop_stats(nnet: Nnet, calibration: Calibration, unit: Unit, recorder: Recorder,
                      open_loop: UnitStats) -> UnitStats:
    """Statistics of ``unit``'s input in the (partly compressed) ``nnet`` against the
    original network's, recorded by :func:`record_original` on the same data."""
    which = recorder.wanted[unit.node]
    acc = CrossAccumulator(unit.node, which, recorder.rows[unit.node])
    calibration.run(nnet, acc)
    return acc.stats(open_loop)
