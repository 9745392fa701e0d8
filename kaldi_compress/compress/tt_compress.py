"""The TT compressor: choose TT factorizations (or SVD, or nothing) per layer and rewrite.

Rules (exactly one): a TT rank cap ``tt_rank`` or a relative error bound ``tt_eps``
for every matched affine-like layer (its TT shape given or chosen automatically), or
a global budget ``param_ratio`` / ``target_params`` (parameters as ``nnet3-am-info``
counts them, as for ``kaldi-compress svd``).

Budget (on :mod:`.spine`): the selected units each offer options -- unchanged, an
SVD rank (:func:`.svd.svd_options`), or a TT of one of the unit's
matrices at some shape and rank -- each with its parameter count and damage, and
:func:`.spine.within_budget` picks one per unit (Lagrangian relaxation).  Damage is the
weights-only relative squared error, on the same scale as SVD's:

* affine/tdnn unit, TT of W: ||W - TT||_F^2 / ||W||_F^2 (the discarded energy);
* bottleneck unit (producer L, consumers stacked as S with any BatchNorm scale
  folded in), TT of a consumer: ||(F - TT) D||_F^2 / ||S||_F^2 (D the BatchNorm scale);
  TT of the producer: ||S (L - TT)||_F^2 / ||S L||_F^2 (output error for white input).

With calibration audio (``calibration``), the shapes and ranks are chosen as above and
each TT layer's cores are then fitted to its outputs on that audio (:mod:`.tt_data`:
Kronecker-whitened TT-SVD, kept only where it beats TT-SVD of W on the calibration data).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..errors import KaldiCompressError
from ..nnet3 import Nnet
from ..nnet3.components import (AffineComponent, Component, LinearComponent,
                                NaturalGradientAffineComponent, TdnnComponent)
from ..nnet3.components.base import match_glob
from .budget import Option
from .lowrank import spectrum
from .rewrite import Fit, apply_rank, fit_unit
from .spine import (CompressOptions, LayerReport, nothing_matched, progress, select_units,
                    unit_shape, within_budget)
from .svd import svd_options
from .tt import TTMatrix, TTShape, candidate_shapes, padded_rows, rank_grid, tt_svd_many
from .tt_kaldi import TTLayer, chain_params_for, chain_steps, write_layer
from .units import Unit, bias, consumer_blocks, counted, offsets, single_unit, weight

TT_TYPES = (AffineComponent, LinearComponent, TdnnComponent)   # trainable affine-like


@dataclass
class TtOptions(CompressOptions):
    tt_rank: int | None = None
    tt_eps: float | None = None
    tt_shape: TTShape | None = None
    tt_cores: tuple[int, ...] = (2, 3)
    allow_svd: bool = True               # budget: a layer may take SVD instead of TT
    calibration: object | None = None    # data-aware cores: a calibrate.Calibration
    RULES: ClassVar = (("tt_rank", "--tt-rank"), ("tt_eps", "--tt-eps"))

    def check_rules(self) -> None:
        if self.tt_rank is not None and self.tt_rank < 1:
            raise KaldiCompressError(f"--tt-rank must be positive, got {self.tt_rank}")
        if self.tt_eps is not None and not 0 <= self.tt_eps < 1:
            raise KaldiCompressError(f"--tt-eps must be in [0, 1), got {self.tt_eps}")
        if not self.tt_cores or any(not 2 <= d <= 6 for d in self.tt_cores):
            raise KaldiCompressError(f"--tt-cores must list numbers of cores in 2..6, "
                                     f"got {','.join(map(str, self.tt_cores))}")


@dataclass
class TTChoice:
    """A TT factorization of one component (a budget option's tag)."""
    node: str
    component: str
    shape: TTShape
    padded: int               # rows the TT has (>= the layer's; extra rows are trimmed)
    tt: TTMatrix = field(repr=False)
    params: int               # Kaldi-counted parameters of the replacement (chain + bias)
    bias: np.ndarray | None = field(default=None, repr=False)   # data-aware: the new bias
    data_fit: object | None = field(default=None, repr=False)   # data-aware: a tt_data.DataFit

    @property
    def ranks(self) -> tuple[int, ...]:
        return self.tt.ranks

    def shape_text(self, rows: int) -> str:
        s = str(self.shape)
        return s if self.padded == rows else f"{s} (pad {rows}->{self.padded})"


# ---------------------------------------------------------------------------
# Matrices and their TTs.

def _component(nnet: Nnet, node: str) -> Component:
    return nnet.components[nnet.node(node).component]


def _matrix(comp: Component) -> np.ndarray:
    return weight(comp).astype(np.float64)


def _tt_params(comp: Component, shape: TTShape, ranks: tuple[int, ...]) -> int:
    """Counted parameters of the chain replacing ``comp`` (bias in a PerElementOffset)."""
    return chain_params_for(shape, ranks) + len(bias(comp))


def _shapes(rows: int, cols: int, opts: TtOptions, name: str) -> list[tuple[TTShape, int]]:
    if opts.tt_shape is None:
        return candidate_shapes(rows, cols, opts.tt_cores)
    s = opts.tt_shape
    if s.cols != cols or s.rows < rows:
        raise KaldiCompressError(f"--tt-shape={s} is {s.rows}x{s.cols} but {name} is "
                                 f"{rows}x{cols} (the input dim must match exactly; the "
                                 f"output dim may only be padded up)")
    return [(s, s.rows)]


def _tts(nnet: Nnet, node: str, shapes, caps: list, eps: float | None = None
         ) -> list[TTChoice]:
    comp = _component(nnet, node)
    w = _matrix(comp)
    out = []
    for shape, padded in shapes:
        for tt in tt_svd_many(padded_rows(w, padded), shape, caps, eps):
            out.append(TTChoice(node, nnet.node(node).component, shape, padded, tt,
                                _tt_params(comp, shape, tt.ranks)))
    return out


def true_error(nnet: Nnet, choice: TTChoice) -> float:
    """||W - TT||_F / ||W||_F on the layer's own rows (padding trimmed)."""
    w = _matrix(_component(nnet, choice.node))
    approx = choice.tt.to_matrix()[:w.shape[0]]
    return float(np.linalg.norm(w - approx) / max(np.linalg.norm(w), 1e-30))


def svd_equivalent(nnet: Nnet, node: str, rel_error: float) -> tuple[int, int]:
    """(k, params): the smallest SVD rank of the node's matrix with relative error <=
    ``rel_error``, and the parameters its two-layer rewrite counts."""
    unit = single_unit(nnet, node)
    spec = spectrum(_matrix(_component(nnet, node)))
    errs = [spec.relative_error(k) for k in range(len(spec.s) + 1)]
    k = next((k for k, e in enumerate(errs) if e <= rel_error * (1 + 1e-9)), len(spec.s))
    k = max(k, 1)
    return k, (unit.params_at(k) if k < unit.full_rank else unit.params_before)


# ---------------------------------------------------------------------------
# Rules: one TT per matched layer.

def tt_layers(nnet: Nnet, pattern: str) -> list[str]:
    """Nodes of trainable affine-like components matching ``pattern``."""
    nodes = [n.name for n, c in nnet.component_nodes()
             if match_glob(pattern, n.component) and isinstance(c, TT_TYPES)
             and c.is_updatable]
    if not nodes:
        raise nothing_matched(nnet, pattern, "no trainable affine-like layer")
    return nodes


def choose_by_rule(nnet: Nnet, node: str, opts: TtOptions) -> TTChoice:
    """--tt-eps: the shape needing the fewest parameters; --tt-rank: the least error."""
    w = weight(_component(nnet, node))
    shapes = _shapes(w.shape[0], w.shape[1], opts, node)
    if opts.tt_eps is not None:
        cands = _tts(nnet, node, shapes, [None], opts.tt_eps)
        return min(cands, key=lambda c: (c.params, c.tt.relative_error))
    cands = _tts(nnet, node, shapes, [opts.tt_rank])
    return min(cands, key=lambda c: (round(c.tt.relative_error, 12), c.params))


# ---------------------------------------------------------------------------
# Budget: TT options next to SVD options.

def _bottleneck_metric(nnet: Nnet, unit: Unit):
    """For TT of a bottleneck member: damage(node, TTChoice) on the unit's SVD scale."""
    s_mat, _, scale, _ = consumer_blocks(nnet, unit)
    s2 = float(np.vdot(s_mat, s_mat))
    lam, q = np.linalg.eigh(s_mat.T @ s_mat)                     # S^T S = R^T R
    r_half = (q * np.sqrt(np.maximum(lam, 0.0))) @ q.T
    producer = _matrix(nnet.components[unit.name])
    ref = float(np.linalg.norm(r_half @ producer) ** 2)

    def damage(node: str, c: TTChoice) -> float:
        w = _matrix(_component(nnet, node))
        e = w - c.tt.to_matrix()[:w.shape[0]]
        if node == unit.node:                                    # the producer
            return float(np.linalg.norm(r_half @ e) ** 2) / max(ref, 1e-30)
        if scale is not None:
            e = e * np.tile(scale, e.shape[1] // len(scale))[None, :]
        return float(np.vdot(e, e)) / max(s2, 1e-30)
    return damage


def unit_options(nnet: Nnet, unit: Unit, fit: Fit, opts: TtOptions) -> list[Option]:
    """Keep, SVD ranks (if allowed) and TT options of each of the unit's matrices,
    without dominated ones (more parameters and more damage than another option)."""
    table = svd_options(unit, fit) if opts.allow_svd \
        else [Option(unit.full_rank, unit.params_before, 0.0)]
    metric = _bottleneck_metric(nnet, unit) if unit.is_bottleneck else None
    for node in unit.members:
        comp = _component(nnet, node)
        if not isinstance(comp, TT_TYPES) or not comp.is_updatable:
            continue
        w = weight(comp)
        try:
            shapes = _shapes(w.shape[0], w.shape[1], opts, node)
        except KaldiCompressError:
            continue   # a forced shape fits only some layers
        others = unit.params_before - counted(comp)
        for shape, padded in shapes:
            caps = rank_grid(max(shape.full_ranks()))
            for c in _tts(nnet, node, [(shape, padded)], caps):
                params = others + c.params
                if params >= unit.params_before:
                    continue
                dmg = metric(node, c) if metric else c.tt.relative_error ** 2
                table.append(Option(unit.full_rank, params, dmg, c))
    return _pareto(table)


def _pareto(table: list[Option]) -> list[Option]:
    table = sorted(table, key=lambda o: (o.params, o.damage))
    out, best = [], math.inf
    for o in table:
        if o.damage < best:
            out.append(o)
            best = o.damage
    return out


# ---------------------------------------------------------------------------
# The compressor.

def _apply_tt(nnet: Nnet, c: TTChoice) -> None:
    comp = _component(nnet, c.node)
    natural = isinstance(comp, NaturalGradientAffineComponent) or \
        bool(comp.get("<UseNaturalGradient>", False))
    b = bias(comp) if c.bias is None else c.bias
    layer = TTLayer(chain_steps(c.tt.cores), weight(comp).shape[0],
                    b if len(b) else None, comp.updatable_config(), natural)
    write_layer(nnet, c.node, layer, offsets(comp))


def _tt_report(nnet: Nnet, c: TTChoice, before: int, after: int, name: str,
               kind: str) -> LayerReport:
    """Parameters before/after (and the SVD alternative's) count everything the row
    covers: the layer, or the whole unit when the TT replaces one matrix of a unit."""
    comp = _component(nnet, c.node)
    w = weight(comp)
    err = true_error(nnet, c)
    k, p = svd_equivalent(nnet, c.node, err)
    others = before - counted(comp)
    fit = c.data_fit
    note = "" if fit is None else \
        (f"calibration output error {fit.error:.4f} with data-aware cores, "
         f"{fit.weights_only_error:.4f} with TT-SVD of W" if fit.data_aware else
         f"TT-SVD of W kept (output error {fit.error:.4f}, no worse on the "
         "calibration data than data-aware cores)")
    return LayerReport(name, "tt", kind, f"{w.shape[1]}->{w.shape[0]}", before, after, err,
                       None if fit is None else fit.error,
                       tt_shape=c.shape_text(w.shape[0]), tt_ranks=_ranks_text(c),
                       svd_rank=k, svd_params=others + p, note=note)


def _input_stats(nnet: Nnet, nodes: list[str], opts: TtOptions) -> dict:
    """Calibration statistics of the nodes' inputs (none without calibration)."""
    if opts.calibration is None or not nodes:
        return {}
    from .tt_data import input_moments
    return input_moments(nnet, opts.calibration, nodes)


def _data_aware(nnet: Nnet, c: TTChoice, stats) -> TTChoice:
    """``c`` with data-aware cores (:mod:`.tt_data`) if they fit ``stats`` better."""
    if stats is None:
        return c
    from .tt_data import fit_layer, with_fit
    comp = _component(nnet, c.node)
    b = bias(comp)
    return with_fit(c, fit_layer(weight(comp), b if len(b) else None, c.tt, c.padded, stats))


def _ranks_text(c: TTChoice) -> str:
    return "-".join(map(str, c.ranks[1:-1]))


def tt_compress(nnet: Nnet, opts: TtOptions) -> list[LayerReport]:
    """Compress ``nnet`` in place; returns a report row per layer (or unit) considered."""
    opts.check()
    if opts.budget:
        return _compress_budget(nnet, opts)
    reports = []
    nodes = tt_layers(nnet, opts.components)
    stats = _input_stats(nnet, nodes, opts)
    for node in progress(nodes, opts, "tt"):
        comp = _component(nnet, node)
        name = nnet.node(node).component
        before = counted(comp)
        c = choose_by_rule(nnet, node, opts)
        w = weight(comp)
        shape = f"{w.shape[1]}->{w.shape[0]}"
        kind = single_unit(nnet, node).describe()
        if c.params > opts.shrinkage_threshold * before:
            reports.append(LayerReport(name, "kept", kind, shape, before, before, 0.0,
                                       tt_shape=c.shape_text(w.shape[0]), tt_ranks=_ranks_text(c),
                                       note=f"kept (TT would need {c.params} parameters)"))
            continue
        c = _data_aware(nnet, c, stats.get(node))
        row = _tt_report(nnet, c, before, c.params, name, kind)
        _apply_tt(nnet, c)
        reports.append(row)
    return reports


def _compress_budget(nnet: Nnet, opts: TtOptions) -> list[LayerReport]:
    units = select_units(nnet, opts.components)
    shapes = {u.name: unit_shape(nnet, u) for u in units}
    fits = {u.name: fit_unit(nnet, u) for u in units}
    table = [unit_options(nnet, u, fits[u.name], opts)
             for u in progress(units, opts, "tt options")]
    chosen = within_budget(nnet, units, table, opts)
    stats = _input_stats(nnet, [o.tag.node for o in chosen if isinstance(o.tag, TTChoice)], opts)
    reports = []
    for u, o in zip(units, chosen):
        kind = u.describe()
        if isinstance(o.tag, TTChoice):
            c = _data_aware(nnet, o.tag, stats.get(o.tag.node))
            name = c.component + (f" ({u.name})" if c.component != u.name else "")
            reports.append(_tt_report(nnet, c, u.params_before, o.params, name, kind))
            _apply_tt(nnet, c)
        elif o.rank < u.full_rank:
            fit = fits[u.name]
            reports.append(LayerReport(u.name, "svd", kind, shapes[u.name], u.params_before,
                                       o.params, fit.spec.relative_error(o.rank),
                                       rank_before=u.full_rank, rank_after=o.rank))
            apply_rank(nnet, u, fit, o.rank)
        else:
            reports.append(LayerReport(u.name, "kept", kind, shapes[u.name], u.params_before,
                                       u.params_before, 0.0, rank_before=u.full_rank,
                                       rank_after=u.full_rank))
    return reports
