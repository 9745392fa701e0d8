"""Activation statistics for data-aware truncation.

For each compressible unit we need the second moment C = E[x x^T] of the vector
its truncation acts on -- a layer's input (``affine`` units) or a bottleneck
producer's output h (``bottleneck`` units) -- and the standard deviation of each
of its outputs y (the layer's, or each consumer's), so that errors are measured
per output in units of that output's own spread: d = 1 / std(y), which is what a
following BatchNorm does.  The network is run over calibration audio exactly as
nnet3-compute would (features and online i-vectors from the model directory's
front end, chunks with the model's frame subsampling), and the statistics are
summed over every frame the network computes.  ``tdnn`` units (a multi-offset
layer on its own) keep the weights-only truncation.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import KaldiCompressError
from ..nnet3 import Model
from .layers import Unit, find_units, offsets


@dataclass
class UnitStats:
    """Calibration statistics of one unit."""
    moment: np.ndarray        # E[x x^T] of what the truncation acts on
    row_weight: np.ndarray    # 1 / std of each row of the unit's matrix (its output)


class MomentAccumulator:
    """Sums x x^T of selected node inputs/outputs and the per-dimension first and
    second moments of selected node outputs (float64), over all rows."""

    def __init__(self, inputs_of: set[str], outputs_of: set[str], diag_of: set[str]):
        self.inputs_of, self.outputs_of, self.diag_of = inputs_of, outputs_of, diag_of
        self.sums: dict[str, torch.Tensor] = {}
        self.diag: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.counts: dict[str, int] = {}

    @staticmethod
    def _rows(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, x.shape[-1]).to(torch.float64)

    def __call__(self, node: str, layer_input: torch.Tensor, output: torch.Tensor) -> None:
        if node in self.inputs_of or node in self.outputs_of:
            x = self._rows(layer_input if node in self.inputs_of else output)
            self.sums[node] = self.sums.get(node, 0) + x.T @ x
            self.counts[node] = self.counts.get(node, 0) + x.shape[0]
        if node in self.diag_of:
            y = self._rows(output)
            s1, s2 = self.diag.get(node, (0, 0))
            self.diag[node] = (s1 + y.sum(0), s2 + (y * y).sum(0))
            self.counts["<out>" + node] = self.counts.get("<out>" + node, 0) + y.shape[0]

    def moment(self, node: str) -> np.ndarray:
        return (self.sums[node] / max(self.counts[node], 1)).numpy()

    def inverse_std(self, node: str) -> np.ndarray:
        n = max(self.counts["<out>" + node], 1)
        s1, s2 = self.diag[node]
        var = (s2 / n - (s1 / n) ** 2).numpy()
        return 1.0 / np.sqrt(np.maximum(var, 1e-8 * max(float(var.max()), 1e-30)))

    def unit_stats(self, nnet, unit: Unit) -> UnitStats:
        if unit.kind == "bottleneck":
            d = [np.tile(self.inverse_std(c), len(offsets(nnet.components[nnet.node(c).component])))
                 for c in unit.consumers]
            return UnitStats(self.moment(unit.node), np.concatenate(d))
        return UnitStats(self.moment(unit.node), self.inverse_std(unit.node))


def list_audio(data_dir: str | Path, max_utts: int) -> list[Path]:
    wavs = sorted(Path(data_dir).glob("*.wav"))
    if not wavs:
        raise KaldiCompressError(f"{data_dir}: no .wav files for calibration")
    return wavs[:max_utts] if max_utts > 0 else wavs


def calibrate(model: Model, model_dir: str | Path, data_dir: str | Path,
              max_utts: int = 100, dither: float | None = 0.0,
              progress: bool | None = None) -> dict[str, UnitStats]:
    """Statistics per unit node (see the module docstring), from the wavs in ``data_dir``."""
    from ..compute.chunking import ComputeOptions, SimpleComputer
    from ..compute.pipeline import ModelDirFrontEnd
    units = [u for u in find_units(model.nnet) if u.kind in ("affine", "bottleneck")]
    acc = MomentAccumulator({u.node for u in units if u.kind == "affine"},
                            {u.node for u in units if u.kind == "bottleneck"},
                            {u.node for u in units if u.kind == "affine"}
                            | {c for u in units for c in u.consumers})
    front = ModelDirFrontEnd(model_dir, dither)
    computer = SimpleComputer(model.nnet, ComputeOptions(
        frame_subsampling_factor=front.frame_subsampling_factor, frames_per_chunk=51,
        online_ivector_period=front.ivector_period))
    computer.forward.observer = acc
    wavs = list_audio(data_dir, max_utts)
    if progress is None:
        progress = sys.stderr.isatty()
    it = wavs
    if progress:
        from tqdm import tqdm
        it = tqdm(wavs, desc="calibrate", unit="utt", file=sys.stderr, leave=False)
    batch: list[tuple[np.ndarray, np.ndarray | None]] = []
    for i, wav in enumerate(it):
        batch.append(front.features(wav))
        if len(batch) == 8 or i == len(wavs) - 1:
            computer.compute_many(batch)
            batch = []
    computer.forward.observer = None
    return {u.node: acc.unit_stats(model.nnet, u) for u in units}
