"""One budget for several methods: widths (pruning), ranks (SVD) and TT together.

The methods share parts of the network (the TDNN-F residual stream is read and
written by every bottleneck's ``.linear`` and ``.affine``), so a width and a rank
are not priced independently.  We choose in two steps, both under the same budget B
(parameters as ``nnet3-am-info`` counts them):

1. **widths**: every width space s offers widths w with predicted output damage
   g_s e_s(w) (:func:`.prune.space_gains`: measured gain, with the refit as it will
   be applied, times the removed units' local damage) and every SVD unit u ranks k
   with g_u e_u(k) (:func:`.svd.data_aware_table`), both in units of the network
   output's variance.
   :func:`.budget.choose` minimises sum g e subject to
   P - sum_s (P_s - P_s(w_s)) - sum_u (P_u - P_u(k_u)) <= B, counting the savings of a
   width and of a rank as if they added up (pruning a bottleneck's inputs and
   lowering its rank both shrink it, so the true total is a little larger);
2. **ranks**: the chosen widths are applied (least-squares refit on calibration
   audio, closed loop: :func:`.prune.apply_widths`) and the rank methods then meet B
   exactly on the pruned network with fresh statistics: data-aware SVD
   (:func:`.svd.svd_compress`, closed loop), or with ``tt`` the TT budget
   (:func:`.tt_compress.tt_compress`, SVD allowed when ``svd`` is among the methods;
   its damage is weights-only).

With ``prune`` alone this is :func:`.prune.prune_compress` under the budget; without
it, the rank method alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import KaldiCompressError
from ..nnet3 import Nnet
from .budget import Option, choose
from .prune import WidthOptions, apply_widths, plan_pruning, space_gains
from .spine import CompressOptions, LayerReport
from .svd import SvdOptions, data_aware_table, svd_compress
from .tt_compress import TtOptions, tt_compress

METHODS = ("svd", "prune", "tt")


@dataclass
class JointOptions(WidthOptions, CompressOptions):
    methods: tuple[str, ...] = ("svd", "prune")
    calibration: object | None = None    # a calibrate.Calibration (required)
    RULES: ClassVar = ()                  # a budget only

    def check_rules(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods or len(set(self.methods)) != len(self.methods):
            raise KaldiCompressError(f"--methods must list distinct methods of "
                                     f"{','.join(METHODS)}, got {','.join(self.methods)}")
        self.check_widths()


@dataclass
class Stage:
    """One step's rows of the per-layer table."""
    name: str                             # "widths" | "ranks"
    reports: list[LayerReport]


def joint_compress(nnet: Nnet, opts: JointOptions) -> list[Stage]:
    """Compress ``nnet`` in place under one budget; the widths step, then the ranks."""
    opts.check()
    if opts.calibration is None:
        raise KaldiCompressError("compress needs calibration data (load_calibration or "
                                 "load_calibration_tables)")
    budget = opts.budget_params(nnet.num_parameters)
    stages = []
    if "prune" in opts.methods:
        stages.append(Stage("widths", _widths(nnet, opts, budget)))
    if "svd" in opts.methods or "tt" in opts.methods:
        stages.append(Stage("ranks", _ranks(nnet, opts, budget)))
    return stages


def _widths(nnet: Nnet, opts: JointOptions, budget: int) -> list[LayerReport]:
    cal = opts.calibration
    plan = plan_pruning(nnet, opts.components, cal, opts.refit, opts.min_width, opts.progress)
    if opts.methods == ("prune",):
        table = plan.table(opts.min_width)
        units: list = []
    else:
        fit_half, probe_half = cal.halves()
        gains = space_gains(nnet, plan_pruning(nnet, opts.components, fit_half, opts.refit,
                                               progress=opts.progress),
                            probe_half, refit=opts.refit,
                            closed_loop=fit_half if opts.closed_loop else None)
        table = [[Option(o.rank, o.params, o.damage * gains.get(s.name, 1.0)) for o in row]
                 for s, row in zip(plan.spaces, plan.table(opts.min_width))]
        units, svd_rows = data_aware_table(nnet, opts.components, cal, progress=opts.progress)
        table += svd_rows
    fixed = nnet.num_parameters - sum(s.params_before for s in plan.spaces) \
        - sum(u.params_before for u in units)
    chosen = choose(table, budget, fixed)
    widths = {s.name: o.rank for s, o in zip(plan.spaces, chosen)}
    return apply_widths(nnet, plan, widths, opts, cal, opts.progress)


def _ranks(nnet: Nnet, opts: JointOptions, budget: int) -> list[LayerReport]:
    if nnet.num_parameters <= budget:
        return []
    common = {"components": opts.components, "target_params": budget,
              "progress": opts.progress}
    if "tt" in opts.methods:
        return tt_compress(nnet, TtOptions(**common, allow_svd="svd" in opts.methods))
    return svd_compress(nnet, SvdOptions(**common, calibration=opts.calibration,
                                         closed_loop=opts.closed_loop))
