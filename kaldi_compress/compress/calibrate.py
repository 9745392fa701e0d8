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
and the bias absorbs the mean exactly (see :func:`.rewrite.fit_unit`).  ``tdnn`` units (a
multi-offset layer on its own) keep the weights-only truncation.

A multi-offset consumer y(t) = sum_j F_j h(t + o_j) + b of a bottleneck sees its
taps together: the statistics of the spliced z = [h(t + o_1); ...; h(t + o_K)]
(the taps are correlated in time) make its refit an exact least-squares problem.

Closed loop (:func:`closed_loop_stats`): when the units before u are already
compressed, u's input is x_c rather than the original x_o.  Its new parameters
should then reproduce the original outputs from x_c: the target map becomes the
regression of W x_o on x_c, W Cov(x_o, x_c) Cov(x_c)^{-1}, so each layer also
corrects the errors of the layers below it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..compute.layers import Tdnn, gather_rows
from ..errors import KaldiCompressError
from ..nnet3 import Nnet
from .units import Unit, UnitKind, find_units, offsets


@dataclass
class Moments:
    """E[x x^T] and E[x] of a vector x, and (closed loop) its relation to the
    original network's x_o on the same frames."""
    moment: np.ndarray
    mean: np.ndarray
    cross: np.ndarray | None = None        # Cov(x_o, x)
    target_mean: np.ndarray | None = None  # E[x_o]

    def covariance(self) -> np.ndarray:
        return self.moment - np.outer(self.mean, self.mean)

    def shrunk(self, alpha: float, kept: np.ndarray | None = None) -> "Moments":
        """The moments of x + e, e ~ N(0, alpha * v I) independent of x, with v the mean
        variance tr(Cov(x)) / n: every fit on them becomes a ridge regression that
        trusts no input direction the calibration audio barely spans (alpha = 0: as is;
        large alpha: towards the weights-only fit).  Closed loop, the original's x_o
        gets the same e on the dimensions x has (x_o[kept], default all), so the
        ridge pulls towards the original map rather than towards zero."""
        if not alpha:
            return self
        n = len(self.mean)
        extra = alpha * max(float(np.trace(self.covariance())) / max(n, 1), 0.0)
        cross = self.cross
        if cross is not None:
            cross = cross.copy()
            cross[np.arange(n) if kept is None else kept, np.arange(n)] += extra
        return replace(self, moment=self.moment + extra * np.eye(n), cross=cross)


@dataclass
class UnitStats(Moments):
    """Calibration statistics of one unit: its input x, the spreads of its outputs,
    and the spliced taps of its multi-offset consumers (by consumer node)."""
    row_weight: np.ndarray | None = None   # 1 / std of each row of the unit's matrix
    taps: dict[str, Moments] = field(default_factory=dict)

    def shrunk(self, alpha: float) -> "UnitStats":
        if not alpha:
            return self
        return replace(super().shrunk(alpha),
                       taps={k: t.shrunk(alpha) for k, t in self.taps.items()})


@dataclass
class Calibration:
    """Calibration utterances (features, online i-vectors), how to chunk them, and the
    shrinkage that the statistics of data-aware fits get (see :meth:`Moments.shrunk`)."""
    utterances: list[tuple[np.ndarray, np.ndarray | None]]
    compute_options: object = field(repr=False)   # compute.chunking.ComputeOptions
    shrinkage: float = 0.0

    def run(self, nnet: Nnet, observer=None, until: Iterable[str] = ()) -> list[np.ndarray]:
        """The network's outputs; ``observer(node, layer_input, output)`` sees every step
        (with ``until``, computing stops once those nodes are computed: the outputs are
        then undefined)."""
        computer = self._computer(nnet, observer, until)
        outs = []
        for i in range(0, len(self.utterances), 8):
            outs.extend(computer.compute_many(self.utterances[i:i + 8]))
        return outs

    def _computer(self, nnet: Nnet, observer, until: Iterable[str] = ()):
        from ..compute.chunking import ComputeOptions, SimpleComputer
        computer = SimpleComputer(nnet, ComputeOptions(**vars(self.compute_options)))
        computer.forward.observer = observer
        computer.forward.stop_after = frozenset(until)
        return computer

    def run_paired(self, first: Nnet, first_observer, second: Nnet, second_observer,
                   until: Iterable[str] = ()) -> None:
        """Both networks over the utterances, 8 at a time, ``first`` before ``second`` on
        each group: an observer of ``second`` may consume what ``first``'s recorded.
        ``until``: nodes after which neither observer needs anything (computing stops
        once they are computed)."""
        computers = [self._computer(first, first_observer, until),
                     self._computer(second, second_observer, until)]
        for i in range(0, len(self.utterances), 8):
            for computer in computers:
                computer.compute_many(self.utterances[i:i + 8])

    def halves(self) -> tuple["Calibration", "Calibration"]:
        """The even and the odd utterances: one half to fit on, the other to measure on."""
        return (replace(self, utterances=self.utterances[0::2]),
                replace(self, utterances=self.utterances[1::2]))


def load_calibration(model_dir: str | Path, data_dirs: list[str | Path], max_utts: int = 100,
                     dither: float | None = 0.0, progress: bool | None = None,
                     shrinkage: float = 0.0) -> Calibration:
    """Features of up to ``max_utts`` wavs (shared out over ``data_dirs``; 0: all)."""
    if shrinkage < 0:
        raise KaldiCompressError(f"--shrinkage must be >= 0, got {shrinkage}")
    from ..compute.chunking import ComputeOptions
    from ..frontend.model_dir import ModelDirFrontEnd
    front = ModelDirFrontEnd(model_dir, dither)
    per_dir = max(1, max_utts // max(1, len(data_dirs))) if max_utts > 0 else 0
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
        online_ivector_period=front.ivector_period), shrinkage)


def load_calibration_tables(feats: str, ivectors: str = "", ivector_period: int = 0,
                            max_utts: int = 120, frame_subsampling_factor: int = 1,
                            frames_per_chunk: int = 51, shrinkage: float = 0.0) -> Calibration:
    """Calibration utterances from Kaldi tables, as ``nnet3-compute`` reads them: features
    (``scp:data/train_hires/feats.scp``, or a piped ``ark:apply-cmvn-online ... |``) and
    online i-vectors by utterance (``scp:.../ivector_online.scp``, one row per
    ``ivector_period`` frames).  Up to ``max_utts`` non-empty utterances with i-vectors
    (0: all): from an ``scp:`` table the lines i * n / max_utts, as :func:`list_audio`
    spreads wavs; from an ``ark:`` (read in order) the first ones, the rest unread."""
    from ..compute.chunking import ComputeOptions
    from ..io.tables import (ivector_reader, read_matrices, read_matrix, scp_entries,
                             usable_utterances)
    if shrinkage < 0:
        raise KaldiCompressError(f"--shrinkage must be >= 0, got {shrinkage}")
    if frame_subsampling_factor < 1 or frames_per_chunk < 1:
        raise KaldiCompressError("--frame-subsampling-factor and --frames-per-chunk must be "
                                 ">= 1")
    table = ivector_reader(ivectors, ivector_period, "--calibration-ivectors")
    entries = scp_entries(feats)
    if entries is None:
        items = ((key, len(m), m) for key, m in read_matrices(feats))
    else:
        items = ((key, len(m), m) for key, rx in evenly_spaced(entries, max_utts)
                 for m in (read_matrix(rx),))
    utts = [(m, None if table is None else table[key])
            for key, m in usable_utterances(items, table, feats, limit=max(max_utts, 0))]
    return Calibration(utts, ComputeOptions(
        frame_subsampling_factor=frame_subsampling_factor, frames_per_chunk=frames_per_chunk,
        online_ivector_period=ivector_period if ivectors else 0), shrinkage)


def list_audio(data_dir: str | Path, max_utts: int) -> list[Path]:
    """Up to ``max_utts`` wavs spread evenly over the directory's sorted list:
    corpora sort by speaker, and the first files would be a few speakers only."""
    wavs = sorted(Path(data_dir).glob("*.wav"))
    if not wavs:
        raise KaldiCompressError(f"{data_dir}: no .wav files for calibration")
    return evenly_spaced(wavs, max_utts)


def evenly_spaced(items: list, n: int) -> list:
    """Items i * len / n for i < n (all of them when n <= 0 or n >= len)."""
    if n <= 0 or n >= len(items):
        return items
    return [items[i * len(items) // n] for i in range(n)]


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).to(torch.float64)


def _extract(kind: str, layer_input: torch.Tensor, output: torch.Tensor, index) -> torch.Tensor:
    """The rows a statistic is about: the step's input, output, or spliced taps."""
    if kind == "input":
        return _rows(layer_input)
    if kind == "output":
        return _rows(output)
    return _rows(gather_rows(layer_input, Tdnn.tap_rows(index)).flatten(2))


TAPS = "<taps>"


def wanted_rows(nnet: Nnet, units: list[Unit]) -> dict[str, tuple[str, str]]:
    """key -> (node, kind): each unit's vector, and its multi-offset consumers' taps."""
    out = {}
    for u in units:
        out[u.node] = (u.node, "input" if u.kind is UnitKind.AFFINE else "output")
        if u.is_bottleneck and not u.batchnorm:
            for c in u.consumers:
                if len(offsets(nnet.components[nnet.node(c).component])) > 1:
                    out[TAPS + c] = (c, "taps")
    return out


class MomentAccumulator:
    """Sums x x^T and x of the selected rows (see :func:`wanted_rows`) and the
    per-dimension first and second moments of selected node outputs (float64)."""

    def __init__(self, wanted: dict[str, tuple[str, str]], diag_of: set[str]):
        self.by_node: dict[str, list[tuple[str, str]]] = {}
        for key, (node, kind) in wanted.items():
            self.by_node.setdefault(node, []).append((key, kind))
        self.diag_of = diag_of
        self.sums: dict[str, torch.Tensor] = {}
        self.firsts: dict[str, torch.Tensor] = {}
        self.diag: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.counts: dict[str, int] = {}

    def __call__(self, node: str, layer_input: torch.Tensor, output: torch.Tensor,
                 index=None) -> None:
        for key, kind in self.by_node.get(node, ()):
            x = _extract(kind, layer_input, output, index)
            self.sums[key] = self.sums.get(key, 0) + x.T @ x
            self.firsts[key] = self.firsts.get(key, 0) + x.sum(0)
            self.counts[key] = self.counts.get(key, 0) + x.shape[0]
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

    def moments(self, key: str) -> Moments:
        return Moments(self.moment(key), self.mean(key))

    def reached(self, unit: Unit) -> bool:
        """Whether computing 'output' ran the unit (not so for the xent branch of a
        model not prepared for test): only such units get statistics."""
        outs = unit.consumers if unit.is_bottleneck else (unit.node,)
        return unit.node in self.sums and all("<out>" + c in self.counts for c in outs)

    def unit_stats(self, nnet: Nnet, unit: Unit) -> UnitStats:
        if unit.is_bottleneck:
            d = np.concatenate([
                np.tile(self.inverse_std(c), len(offsets(nnet.components[nnet.node(c).component])))
                for c in unit.consumers])
            taps = {c: self.moments(TAPS + c) for c in unit.consumers if TAPS + c in self.sums}
            return UnitStats(self.moment(unit.node), self.mean(unit.node), row_weight=d,
                             taps=taps)
        return UnitStats(self.moment(unit.node), self.mean(unit.node),
                         row_weight=self.inverse_std(unit.node))


def data_units(nnet: Nnet) -> list[Unit]:
    """The units that data-aware truncation handles."""
    return [u for u in find_units(nnet) if u.kind is not UnitKind.TDNN]


def unit_statistics(nnet: Nnet, calibration: Calibration) -> dict[str, UnitStats]:
    """Open-loop statistics per unit node (see the module docstring)."""
    units = data_units(nnet)
    acc = MomentAccumulator(wanted_rows(nnet, units),
                            {u.node for u in units if u.kind is UnitKind.AFFINE}
                            | {c for u in units for c in u.consumers})
    calibration.run(nnet, acc)
    return {u.node: acc.unit_stats(nnet, u).shrunk(calibration.shrinkage)
            for u in units if acc.reached(u)}


class Recorder:
    """Keeps, in call order, the rows of the selected statistics (float32)."""

    def __init__(self, wanted: dict[str, tuple[str, str]]):
        self.wanted = wanted
        self.by_node: dict[str, list[tuple[str, str]]] = {}
        for key, (node, kind) in wanted.items():
            self.by_node.setdefault(node, []).append((key, kind))
        self.rows: dict[str, list[torch.Tensor]] = {k: [] for k in wanted}

    def __call__(self, node: str, layer_input: torch.Tensor, output: torch.Tensor,
                 index=None) -> None:
        for key, kind in self.by_node.get(node, ()):
            self.rows[key].append(_extract(kind, layer_input, output, index).to(torch.float32))


class CrossAccumulator:
    """E[x x^T], E[x], Cov(x_o, x), E[x_o] of selected rows against recorded original rows
    of the same frames (x_o may be wider than x: the original of a pruned input); each
    recorded block is used once and then freed."""

    def __init__(self, wanted: dict[str, tuple[str, str]], original: dict[str, list[torch.Tensor]]):
        self.by_node: dict[str, list[tuple[str, str]]] = {}
        for key, (node, kind) in wanted.items():
            self.by_node.setdefault(node, []).append((key, kind))
        self.original = original
        self.i = {k: 0 for k in wanted}
        self.n = {k: 0 for k in wanted}
        self.s: dict[str, list] = {k: [0, 0, 0, 0] for k in wanted}   # xx, ox, x, o

    def __call__(self, node: str, layer_input: torch.Tensor, output: torch.Tensor,
                 index=None) -> None:
        for key, kind in self.by_node.get(node, ()):
            x = _extract(kind, layer_input, output, index)
            o = self.original[key][self.i[key]].to(torch.float64)
            self.original[key][self.i[key]] = None     # used once: free it
            self.i[key] += 1
            if o.shape[0] != x.shape[0]:   # the columns may differ: pruned inputs
                raise KaldiCompressError(f"closed-loop calibration: node {node} computed "
                                         f"{x.shape[0]} rows, the original {o.shape[0]}")
            acc = self.s[key]
            acc[0] = acc[0] + x.T @ x
            acc[1] = acc[1] + o.T @ x
            acc[2], acc[3] = acc[2] + x.sum(0), acc[3] + o.sum(0)
            self.n[key] += x.shape[0]

    def moments(self, key: str) -> Moments:
        n = max(self.n[key], 1)
        xx, ox, sx, so = self.s[key]
        mean, target = (sx / n).numpy(), (so / n).numpy()
        return Moments((xx / n).numpy(), mean, (ox / n).numpy() - np.outer(target, mean), target)


def paired_cross(nnet: Nnet, original: Nnet, calibration: Calibration,
                 wanted: dict[str, tuple[str, str]]) -> CrossAccumulator:
    """The ``wanted`` rows (:func:`wanted_rows`) of ``nnet`` against ``original``'s on the
    same frames.  Both networks run side by side, 8 utterances at a time, each stopping
    once the wanted nodes are computed: memory holds one group's rows, whatever the audio."""
    recorder = Recorder(wanted)
    acc = CrossAccumulator(wanted, recorder.rows)
    calibration.run_paired(original, recorder, nnet, acc,
                           until={node for node, _ in wanted.values()})
    return acc


def closed_loop_stats(nnet: Nnet, original: Nnet, calibration: Calibration, unit: Unit,
                      open_loop: UnitStats) -> UnitStats:
    """Statistics of ``unit``'s input (and taps) in the (partly compressed) ``nnet``
    against ``original``'s (:func:`paired_cross`)."""
    wanted = wanted_rows(original, [unit])
    acc = paired_cross(nnet, original, calibration, wanted)
    main = acc.moments(unit.node)
    taps = {k[len(TAPS):]: acc.moments(k) for k in wanted if k != unit.node}
    return UnitStats(main.moment, main.mean, main.cross, main.target_mean,
                     row_weight=open_loop.row_weight, taps=taps).shrunk(calibration.shrinkage)
