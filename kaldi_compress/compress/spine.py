"""The path every compression method takes: select units, price options, choose
within the budget, apply, report.

1. :func:`select_units` -- the compressible units (:mod:`.units`) whose components
   all match ``--components``;
2. each method prices its choices for a unit as :class:`.budget.Option` rows
   (parameters as Kaldi counts them, damage on a shared scale);
3. :func:`within_budget` picks one option per unit so that the whole network meets
   ``--param-ratio`` / ``--target-params`` with the least total damage;
4. the method applies its chosen options and returns one :class:`LayerReport` per
   unit, printed by :func:`format_report`.

Options common to every method live in :class:`CompressOptions`; a method's options
subclass it and name their per-layer rules in ``RULES`` (exactly one rule or one
budget is given).
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import ClassVar, Iterable

from ..errors import KaldiCompressError
from ..nnet3 import Nnet
from ..nnet3.components.base import match_glob
from .budget import Option, choose
from .units import Unit, consumer_blocks, find_units, weight


@dataclass
class CompressOptions:
    """What every method takes: which components, and a budget or a per-layer rule."""
    components: str = "*"
    param_ratio: float | None = None
    target_params: int | None = None
    shrinkage_threshold: float = 1.0
    progress: bool = False
    RULES: ClassVar[tuple[tuple[str, str], ...]] = ()   # (attribute, option) per rule

    @property
    def budget(self) -> bool:
        return self.param_ratio is not None or self.target_params is not None

    def check(self) -> None:
        given = [getattr(self, attr) is not None for attr, _ in self.RULES]
        if sum(given) + (self.param_ratio is not None) + (self.target_params is not None) != 1:
            flags = [flag for _, flag in self.RULES] + ["--param-ratio", "--target-params"]
            raise KaldiCompressError(f"give exactly one of {', '.join(flags)}")
        if self.param_ratio is not None and not 0 < self.param_ratio <= 1:
            raise KaldiCompressError(f"--param-ratio must be in (0, 1], got {self.param_ratio}")
        if self.target_params is not None and self.target_params < 1:
            raise KaldiCompressError(f"--target-params must be positive, got {self.target_params}")
        if not self.shrinkage_threshold > 0:
            raise KaldiCompressError("--shrinkage-threshold must be positive")
        self.check_rules()

    def check_rules(self) -> None:
        """The method's own checks of its rule values."""

    def budget_params(self, total: int) -> int:
        """The budget in parameters, for a network of ``total``."""
        if self.target_params is not None:
            return self.target_params
        return int(round(self.param_ratio * total))


def select_units(nnet: Nnet, pattern: str) -> list[Unit]:
    """The units all of whose components match ``pattern``; an error if there are none."""
    units = [u for u in find_units(nnet) if all(match_glob(pattern, c) for c in u.components)]
    if not units:
        raise nothing_matched(nnet, pattern, "none that can be factorized")
    return units


def nothing_matched(nnet: Nnet, pattern: str, why: str) -> KaldiCompressError:
    """The error for a --components pattern that leaves a method nothing to do."""
    matched = nnet.find_components(pattern)
    if not matched:
        return KaldiCompressError(f"--components={pattern} matches no component")
    return KaldiCompressError(f"--components={pattern} matches {len(matched)} components "
                              f"but {why}")


def within_budget(nnet: Nnet, units: list[Unit], table: list[list[Option]],
                  opts: CompressOptions) -> list[Option]:
    """One option per unit: the network's parameters (the units' plus everything else's)
    within the budget, least total damage (:func:`.budget.choose`)."""
    total = nnet.num_parameters
    fixed = total - sum(u.params_before for u in units)
    return choose(table, opts.budget_params(total), fixed)


def unit_shape(nnet: Nnet, unit: Unit) -> str:
    """in->out of the unit's map, in->width->out for a bottleneck."""
    if unit.is_bottleneck:
        rows = consumer_blocks(nnet, unit)[0].shape[0]
        return f"{nnet.components[unit.name].input_dim}->{unit.full_rank}->{rows}"
    w = weight(nnet.components[unit.name])
    return f"{w.shape[1]}->{w.shape[0]}"


def progress(items: Iterable, opts: CompressOptions, desc: str) -> Iterable:
    """``items``, with a tqdm bar on stderr if ``opts.progress``."""
    if not opts.progress:
        return items
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit="layer", file=sys.stderr, leave=False)


@dataclass
class LayerReport:
    """One row of the per-layer table, whichever method rewrote (or kept) the unit."""
    name: str
    method: str                      # "svd" | "tt" | "prune" | "kept"
    kind: str                        # the unit: affine, tdnn, bottleneck(+bn)
    shape: str                       # in->out of the matrix (or unit) rewritten
    params_before: int
    params_after: int
    weight_error: float              # ||W - W'||_F / ||W||_F of the matrix
    output_error: float | None = None    # relative output error on calibration data
    rank_before: int | None = None   # SVD: rank (bottleneck width) before and after
    rank_after: int | None = None
    tt_shape: str = ""               # TT: the factorization of the dims and ...
    tt_ranks: str = ""               # ... its inner ranks
    svd_rank: int | None = None      # TT: SVD rank of the matrix with no more error ...
    svd_params: int | None = None    # ... and the row's parameters with that SVD instead
    note: str = ""                   # printed under the table


def _rank(r: LayerReport) -> str:
    if r.rank_before is None:
        return ""
    return f"{r.rank_before}->{r.rank_after}" if r.rank_after != r.rank_before \
        else str(r.rank_before)


def _opt(v) -> str:
    return "" if v is None else str(v)


# header, cell, always shown; columns up to "TT ranks" are left-aligned
_COLUMNS = (
    ("layer", lambda r: r.name, True),
    ("method", lambda r: r.method, True),
    ("kind", lambda r: r.kind, True),
    ("shape", lambda r: r.shape, True),
    ("rank", _rank, False),
    ("TT shape", lambda r: r.tt_shape, False),
    ("TT ranks", lambda r: r.tt_ranks, False),
    ("params", lambda r: str(r.params_before), True),
    ("-> params", lambda r: str(r.params_after), True),
    ("rel.err(W)", lambda r: f"{r.weight_error:.4f}", True),
    ("rel.err(out)", lambda r: "" if r.output_error is None else f"{r.output_error:.4f}", False),
    ("SVD rank@err", lambda r: _opt(r.svd_rank), False),
    ("SVD params", lambda r: _opt(r.svd_params), False),
)
_LEFT = 7


def format_report(reports: list[LayerReport]) -> str:
    """The per-layer table with totals; a column shows only if some row has a value."""
    cols = [(i, h, cell) for i, (h, cell, always) in enumerate(_COLUMNS)
            if always or any(cell(r) for r in reports)]
    rows = [[h for _, h, _ in cols]]
    rows += [[cell(r) or "-" for _, _, cell in cols] for r in reports]
    total = {"layer": "total", "params": str(sum(r.params_before for r in reports)),
             "-> params": str(sum(r.params_after for r in reports))}
    rows.append([total.get(h, "") for _, h, _ in cols])
    widths = [max(len(row[j]) for row in rows) for j in range(len(cols))]
    lines = ["  ".join(v.ljust(w) if i < _LEFT else v.rjust(w)
                       for (i, _, _), v, w in zip(cols, row, widths)).rstrip() for row in rows]
    notes = [f"kaldi-compress: {r.name}: {r.note}" for r in reports if r.note]
    return "\n".join(lines + notes) + "\n"


def report_dict(params_before: int, params_after: int, reports: list[LayerReport]) -> dict:
    """The ``--report`` JSON document."""
    return {"params_before": params_before, "params_after": params_after,
            "layers": [asdict(r) for r in reports]}
