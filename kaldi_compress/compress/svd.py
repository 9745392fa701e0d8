"""The SVD compressor: pick units, choose ranks by a rule or a budget, rewrite.

Rank rules (exactly one): a fixed ``bottleneck_dim``; Kaldi's ``energy_threshold``
(keep the smallest rank holding that fraction of the squared singular values); or a
global budget ``param_ratio`` / ``target_params`` (parameters counted as
``nnet3-am-info`` counts them) shared out by :mod:`.budget`.  A unit whose rewrite
would keep more than ``shrinkage_threshold`` of its parameters is left alone.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..errors import KaldiCompressError
from ..nnet3 import Nnet
from .budget import Option
from .lowrank import least_squares_right
from .rewrite import Fit, apply_rank, fit_unit, refit_in_place
from .spine import CompressOptions, LayerReport, progress, select_units, unit_shape, within_budget
from .units import Unit, UnitKind, unit_matrix


@dataclass
class SvdOptions(CompressOptions):
    bottleneck_dim: int | None = None
    energy_threshold: float | None = None
    calibration: object | None = None   # data-aware: a calibrate.Calibration
    closed_loop: bool = True            # data-aware: refit each unit on compressed inputs
    measure_gains: bool = True          # data-aware budget: weight damage by output gains
    weights: dict[str, float] = field(default_factory=dict)  # budget damage weights
    RULES: ClassVar = (("bottleneck_dim", "--bottleneck-dim"),
                       ("energy_threshold", "--energy-threshold"))

    def check_rules(self) -> None:
        if self.bottleneck_dim is not None and self.bottleneck_dim < 1:
            raise KaldiCompressError(f"--bottleneck-dim must be positive, got {self.bottleneck_dim}")
        if self.energy_threshold is not None and not 0 < self.energy_threshold < 1:
            raise KaldiCompressError(f"--energy-threshold must be in (0, 1), "
                                     f"got {self.energy_threshold}")


def svd_options(unit: Unit, fit: Fit, weight: float = 1.0, min_rank: int = 1) -> list[Option]:
    """The unit's SVD choices: unchanged, or any rank k whose rewrite saves parameters,
    with damage ``weight * fit.damage_scale * sum_{i>k} s_i^2`` (k at most the number of
    singular values: a bottleneck may be wider than its pruned outputs)."""
    e = fit.spec.energy
    tail = np.concatenate([np.cumsum(e[::-1])[::-1], [0.0]]) * fit.damage_scale
    opts = [Option(unit.full_rank, unit.params_before, 0.0)]
    for k in range(max(1, min_rank), min(unit.full_rank, len(e) + 1)):
        p = unit.params_at(k)
        if p < unit.params_before:
            opts.append(Option(k, p, weight * float(tail[k])))
    return opts


def svd_compress(nnet: Nnet, opts: SvdOptions) -> list[LayerReport]:
    """Compress ``nnet`` in place; returns a report row per eligible unit."""
    opts.check()
    units = select_units(nnet, opts.components)
    stats, original, weights = {}, None, dict(opts.weights)
    cal = opts.calibration
    if cal is not None:  # data-aware: needs the torch forward pass (imported only then)
        from .calibrate import closed_loop_stats, unit_statistics
        from .sensitivity import output_gains
        stats = unit_statistics(nnet, cal)
        units = reached_units(units, stats)
        if opts.closed_loop:
            original = nnet.copy()
    shapes = {u.name: unit_shape(nnet, u) for u in units}
    fits = {u.name: fit_unit(nnet, u, stats.get(u.node)) for u in units}
    if cal is not None and opts.budget and opts.measure_gains and not weights:
        weights = output_gains(nnet, stats, cal, progress=opts.progress)
    ranks = _choose_ranks(nnet, units, fits, opts, weights)
    reports, changed = [], False
    for u in progress(units, opts, "svd"):
        k, fit = ranks[u.name], fits[u.name]
        after = u.params_at(k) if k < u.full_rank else u.params_before
        st = stats.get(u.node)
        if original is not None and st is not None and changed and u.kind is not UnitKind.TDNN:
            st = closed_loop_stats(nnet, original, cal, u, st)
            if k >= u.full_rank:   # kept, but refitted to undo the errors below it
                refit_in_place(nnet, u, st)
            else:
                fit = fit_unit(nnet, u, st)
        if k < u.full_rank:
            changed = True
            werr = _weight_error(nnet, u, fit, k, st)
            oerr = fit.spec.relative_error(k) if st is not None else None
            apply_rank(nnet, u, fit, k, st)
        else:
            werr, oerr = 0.0, (0.0 if st is not None else None)
        reports.append(LayerReport(u.name, "svd" if k < u.full_rank else "kept", u.describe(),
                                   shapes[u.name], u.params_before, after, werr, oerr,
                                   rank_before=u.full_rank, rank_after=k))
    return reports


def reached_units(units: list[Unit], stats: dict) -> list[Unit]:
    """The units calibration computed (TDNN units need none); a warning names the rest."""
    unreached = [u for u in units if u.kind is not UnitKind.TDNN and u.node not in stats]
    if unreached:
        warnings.warn(f"{', '.join(u.name for u in unreached)}: not computed for 'output' "
                      "(a training-only branch such as xent?), left as they are; "
                      "'kaldi-compress copy --prepare-for-test' removes them")
    return [u for u in units if u not in unreached]


def data_aware_table(nnet: Nnet, pattern: str, calibration,
                     progress: bool = False) -> tuple[list[Unit], list[list[Option]]]:
    """The units matching ``pattern`` and their SVD options as the data-aware budget of
    :func:`svd_compress` prices them: local damage times the unit's measured output gain
    (:func:`.sensitivity.output_gains`), i.e. predicted network output error."""
    from .calibrate import unit_statistics
    from .sensitivity import output_gains
    stats = unit_statistics(nnet, calibration)
    units = reached_units(select_units(nnet, pattern), stats)
    gains = output_gains(nnet, stats, calibration, progress=progress)
    return units, [svd_options(u, fit_unit(nnet, u, stats.get(u.node)), gains.get(u.name, 1.0))
                   for u in units]


def _choose_ranks(nnet: Nnet, units: list[Unit], fits: dict[str, Fit], opts: SvdOptions,
                  weights: dict[str, float]) -> dict[str, int]:
    if opts.budget:
        table = [svd_options(u, fits[u.name], weights.get(u.name, 1.0)) for u in units]
        return {u.name: o.rank for u, o in zip(units, within_budget(nnet, units, table, opts))}
    ranks = {}
    for u in units:
        k = opts.bottleneck_dim if opts.bottleneck_dim is not None \
            else fits[u.name].spec.rank_for_energy(opts.energy_threshold)
        k = min(k, u.full_rank)
        ratio = u.shrinkage(k)
        ranks[u.name] = u.full_rank if ratio >= 1 or ratio > opts.shrinkage_threshold else k
    return ranks


def _weight_error(nnet: Nnet, unit: Unit, fit: Fit, k: int, stats) -> float:
    """Relative Frobenius change of the unit's matrix after the rewrite at rank k."""
    if stats is None:
        return fit.spec.relative_error(k)
    w = unit_matrix(nnet, unit).astype(np.float64)
    if unit.is_bottleneck:
        p = fit.spec.projection(k)
        c = stats.covariance() if fit.center is not None else stats.moment
        approx = least_squares_right(fit.target, p, c) @ p
    else:
        a, b = fit.spec.factors(k)
        approx = b @ a
    return float(np.linalg.norm(w - approx) / max(np.linalg.norm(w), 1e-30))
