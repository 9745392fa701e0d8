"""The SVD compressor: pick units, choose ranks by a rule or a budget, rewrite.

Rank rules (exactly one): a fixed ``bottleneck_dim``; Kaldi's ``energy_threshold``
(keep the smallest rank holding that fraction of the squared singular values); or a
global budget ``param_ratio`` / ``target_params`` (parameters counted as
``nnet3-am-info`` counts them) shared out by :mod:`.budget`.  A unit whose rewrite
would keep more than ``shrinkage_threshold`` of its parameters is left alone.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from ..errors import KaldiCompressError
from ..nnet3 import Nnet
from ..nnet3.components.base import match_glob
from .budget import allocate
from .layers import (Unit, apply_rank, compute_spectrum, find_units, refit_in_place,
                     unit_matrix)
from .lowrank import least_squares_right


@dataclass
class SvdOptions:
    components: str = "*"
    bottleneck_dim: int | None = None
    energy_threshold: float | None = None
    param_ratio: float | None = None
    target_params: int | None = None
    shrinkage_threshold: float = 1.0
    calibration: object | None = None   # data-aware: a calibrate.Calibration
    closed_loop: bool = True            # data-aware: refit each unit on compressed inputs
    measure_gains: bool = True          # data-aware budget: weight damage by output gains
    weights: dict[str, float] = field(default_factory=dict)  # budget damage weights
    progress: bool = False

    def check(self) -> None:
        rules = [x is not None for x in (self.bottleneck_dim, self.energy_threshold,
                                          self.param_ratio, self.target_params)]
        if sum(rules) != 1:
            raise KaldiCompressError("give exactly one of --bottleneck-dim, --energy-threshold, "
                                     "--param-ratio, --target-params")
        if self.bottleneck_dim is not None and self.bottleneck_dim < 1:
            raise KaldiCompressError(f"--bottleneck-dim must be positive, got {self.bottleneck_dim}")
        if self.energy_threshold is not None and not 0 < self.energy_threshold < 1:
            raise KaldiCompressError(f"--energy-threshold must be in (0, 1), "
                                     f"got {self.energy_threshold}")
        if self.param_ratio is not None and not 0 < self.param_ratio <= 1:
            raise KaldiCompressError(f"--param-ratio must be in (0, 1], got {self.param_ratio}")
        if self.target_params is not None and self.target_params < 1:
            raise KaldiCompressError(f"--target-params must be positive, got {self.target_params}")
        if not self.shrinkage_threshold > 0:
            raise KaldiCompressError("--shrinkage-threshold must be positive")


@dataclass
class LayerReport:
    """One row of the per-layer table."""
    name: str
    kind: str
    shape: str
    rank_before: int
    rank_after: int
    params_before: int
    params_after: int
    weight_error: float            # ||W - W_k||_F / ||W||_F of the unit's matrix
    output_error: float | None     # relative output error on calibration data

    @property
    def changed(self) -> bool:
        return self.rank_after < self.rank_before


def _shape(nnet: Nnet, unit: Unit) -> str:
    w = unit_matrix(nnet, unit)
    if unit.kind == "bottleneck":
        producer = nnet.components[unit.name]
        return f"{producer.input_dim}->{unit.full_rank}->{w.shape[0]}"
    return f"{w.shape[1]}->{w.shape[0]}"


def svd_compress(nnet: Nnet, opts: SvdOptions) -> list[LayerReport]:
    """Compress ``nnet`` in place; returns a report row per eligible unit."""
    opts.check()
    units = [u for u in find_units(nnet)
             if all(match_glob(opts.components, c) for c in u.components)]
    if not units:
        matched = nnet.find_components(opts.components)
        if not matched:
            raise KaldiCompressError(f"--components={opts.components} matches no component")
        raise KaldiCompressError(f"--components={opts.components} matches {len(matched)} "
                                 "components but none that can be factorized")
    stats, recorder, weights = {}, None, dict(opts.weights)
    cal = opts.calibration
    if cal is not None:  # data-aware: needs the torch forward pass (imported only then)
        from .calibrate import closed_loop_stats, record_original, unit_statistics
        from .sensitivity import output_gains
        stats = unit_statistics(nnet, cal)
        if opts.closed_loop:
            recorder = record_original(nnet, cal, [u for u in units if u.node in stats])
    shapes = {}
    for u in units:
        shapes[u.name] = _shape(nnet, u)
        compute_spectrum(nnet, u, stats.get(u.node))
    budget = opts.param_ratio is not None or opts.target_params is not None
    if cal is not None and budget and opts.measure_gains and not weights:
        weights = output_gains(nnet, stats, cal, progress=opts.progress)
    ranks = _choose_ranks(nnet, units, opts, weights)
    it = units
    if opts.progress:
        from tqdm import tqdm
        it = tqdm(units, desc="svd", unit="layer", file=sys.stderr, leave=False)
    reports, changed = [], False
    for u in it:
        k = ranks[u.name]
        after = u.params_at(k) if k < u.full_rank else u.params_before
        st = stats.get(u.node)
        if recorder is not None and st is not None and changed and u.kind != "tdnn":
            st = closed_loop_stats(nnet, cal, u, recorder, st)
            if k >= u.full_rank:   # kept, but refitted to undo the errors below it
                refit_in_place(nnet, u, st)
            else:
                compute_spectrum(nnet, u, st)
        if k < u.full_rank:
            changed = True
            werr = _weight_error(nnet, u, k, st)
            oerr = u.spec.relative_error(k) if st is not None else None
            apply_rank(nnet, u, k, st)
        else:
            werr, oerr = 0.0, (0.0 if st is not None else None)
        reports.append(LayerReport(u.name, u.describe(), shapes[u.name], u.full_rank, k,
                                   u.params_before, after, werr, oerr))
    return reports


def _choose_ranks(nnet: Nnet, units: list[Unit], opts: SvdOptions,
                  weights: dict[str, float]) -> dict[str, int]:
    if opts.param_ratio is not None or opts.target_params is not None:
        total = nnet.num_parameters
        budget = opts.target_params if opts.target_params is not None \
            else int(round(opts.param_ratio * total))
        fixed = total - sum(u.params_before for u in units)
        return allocate(units, budget, fixed, weights)
    ranks = {}
    for u in units:
        k = opts.bottleneck_dim if opts.bottleneck_dim is not None \
            else u.spec.rank_for_energy(opts.energy_threshold)
        k = min(k, u.full_rank)
        ratio = u.shrinkage(k)
        ranks[u.name] = u.full_rank if ratio >= 1 or ratio > opts.shrinkage_threshold else k
    return ranks


def _weight_error(nnet: Nnet, unit: Unit, k: int, stats) -> float:
    """Relative Frobenius change of the unit's matrix after the rewrite at rank k."""
    if stats is None:
        return unit.spec.relative_error(k)
    w = unit_matrix(nnet, unit).astype(np.float64)
    if unit.kind == "bottleneck":
        p = unit.spec.projection(k)
        c = stats.covariance() if unit.center is not None else stats.moment
        approx = least_squares_right(unit.target, p, c) @ p
    else:
        a, b = unit.spec.factors(k)
        approx = b @ a
    return float(np.linalg.norm(w - approx) / max(np.linalg.norm(w), 1e-30))


def format_report(reports: list[LayerReport]) -> str:
    """The per-layer table (and totals) printed by ``kaldi-compress svd``."""
    head = ("layer", "kind", "shape", "rank", "params", "-> params", "rel.err(W)", "rel.err(out)")
    rows = [head]
    for r in reports:
        rank = f"{r.rank_before}->{r.rank_after}" if r.changed else f"{r.rank_before} (kept)"
        rows.append((r.name, r.kind, r.shape, rank, str(r.params_before), str(r.params_after),
                     f"{r.weight_error:.4f}",
                     "-" if r.output_error is None else f"{r.output_error:.4f}"))
    before = sum(r.params_before for r in reports)
    after = sum(r.params_after for r in reports)
    rows.append(("total", "", "", "", str(before), str(after), "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = []
    for row in rows:
        lines.append("  ".join(v.ljust(w) if i < 4 else v.rjust(w)
                               for i, (v, w) in enumerate(zip(row, widths))).rstrip())
    return "\n".join(lines) + "\n"
