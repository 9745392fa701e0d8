"""Structured width pruning: remove hidden units of width spaces (:mod:`.widths`).

Keeping the dimensions K of a space S removes rows of its producers, the same
dimensions of its per-dimension components, and the columns R (the removed
dimensions, in every block) of each consumer y = W z + b.  Each consumer is then
refit by least squares on calibration inputs z of the original network:

    W' = W C_{:,K} C_{K,K}^{-1},    shift = W mu - W' mu_K,

with C the covariance and mu the mean of z, so that W' z_K + shift is the best
affine prediction of W z from the kept inputs (without refitting, W' = W_{:,K} and
shift = W_{:,R} mu_R: the removed units replaced by their means).  The shift goes
into the consumer's bias; a bias-free consumer (a TDNN-F ``.linear``) passes it on
through its bottleneck -- BatchNorm scale included -- into its own consumers' biases.

Closed loop (default): once every space is cut, the consumers are refit again in
network order, each on its inputs z_c in the pruned network (whose earlier layers
are already cut and refit) against the original network's inputs z_o on the same
frames: W' = W Cov(z_o, z_c) Cov(z_c)^{-1}, shift = W mu_o - W' mu_c, so that every
layer also undoes the errors of the layers below it (as the data-aware SVD does).
With ``--shrinkage`` every fit is a ridge regression (:meth:`.calibrate.Moments.shrunk`)
pulled towards the plain cut, W' = W_{:,K}.

Which units go (:mod:`.prune_order`): without refit, in order of each unit's own
damage; with refit, greedily by the damage left after the others are refit (Optimal
Brain Surgeon).  The damage is the mean squared output error per output of every
consumer, in units of its standard deviation -- the scale of the data-aware SVD's
damage.  A space offers every width w >= min_width at the damage of its first
D - w removals; :func:`.spine.within_budget` or a per-space ``keep_fraction``
decides.  Spaces are used only if they share no component with a wider one (the
64-wide TDNN-F bottlenecks are SVD's: they share the ``.linear`` and ``.affine``
layers with the residual stream).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..errors import KaldiCompressError
from ..nnet3 import Nnet
from ..nnet3.components.base import match_glob
from .budget import Option
from .rewrite import with_weight
from .spine import CompressOptions, LayerReport, nothing_matched, within_budget
from .lowrank import regression
from .prune_order import Ranking, diagonal_ranking, diagonal_scores, refit_ranking
from .units import Unit, batchnorm_scale_offset, bias, find_units, offsets, weight
from .widths import Consumer, Space, find_spaces


@dataclass
class WidthOptions:
    """How widths are cut, for every command that prunes."""
    refit: bool = True                    # least-squares refit of the consumers
    closed_loop: bool = True              # refit again on the pruned network's own inputs
    min_width: int = 8                    # never prune a space below this

    def check_widths(self) -> None:
        if self.min_width < 1:
            raise KaldiCompressError("--min-width must be positive")


@dataclass
class PruneOptions(WidthOptions, CompressOptions):
    keep_fraction: float | None = None   # rule: keep this share of every space's width
    calibration: object | None = None    # a calibrate.Calibration (required)
    RULES: ClassVar = (("keep_fraction", "--keep-fraction"),)

    def check_rules(self) -> None:
        if self.keep_fraction is not None and not 0 < self.keep_fraction <= 1:
            raise KaldiCompressError(f"--keep-fraction must be in (0, 1], "
                                     f"got {self.keep_fraction}")
        self.check_widths()


@dataclass
class ConsumerStats:
    """Calibration statistics of a consumer's input z and its outputs' spread."""
    covariance: np.ndarray = field(repr=False)
    mean: np.ndarray = field(repr=False)
    inverse_std: np.ndarray = field(repr=False)


def select_spaces(nnet: Nnet, pattern: str) -> list[Space]:
    """Spaces all of whose components match ``pattern``, widest first among those
    sharing components (each component in at most one), in network order."""
    def comp(node: str) -> str:
        return nnet.node(node).component
    spaces = [s for s in find_spaces(nnet)
              if all(match_glob(pattern, comp(n)) for n in s.components)]
    taken: set[str] = set()
    chosen = []
    for s in sorted(spaces, key=lambda s: -s.dim):
        if not taken.intersection(s.components):
            taken.update(s.components)
            chosen.append(s)
    if not chosen:
        raise nothing_matched(nnet, pattern, "no prunable width (hidden units read only by "
                              "affine-like layers)")
    order = {n.name: i for i, n in enumerate(nnet.nodes)}
    return sorted(chosen, key=lambda s: order[s.name])


def _consumer_rows(nnet: Nnet, spaces: list[Space]) -> dict[str, tuple[str, str]]:
    """Per consumer node, the rows it reads: its (spliced, if multi-offset) input."""
    wanted = {}
    for s in spaces:
        for c in s.consumers:
            multi = len(offsets(nnet.components[nnet.node(c.node).component])) > 1
            wanted[c.node] = (c.node, "taps" if multi else "input")
    return wanted


def consumer_statistics(nnet: Nnet, spaces: list[Space], calibration) -> dict[str, ConsumerStats]:
    """Per consumer node: mean and covariance of its (spliced) input (plus the
    calibration's shrinkage, :meth:`.calibrate.Moments.shrunk`), output spreads."""
    from .calibrate import MomentAccumulator
    wanted = _consumer_rows(nnet, spaces)
    acc = MomentAccumulator(wanted, set(wanted))
    calibration.run(nnet, acc)
    out = {}
    for node in wanted:
        if node not in acc.sums:
            raise KaldiCompressError(f"calibration never computed {node} (a branch 'output' "
                                     "does not use? prepare the model for test first)")
        m = acc.moments(node).shrunk(calibration.shrinkage)
        out[node] = ConsumerStats(m.covariance(), m.mean, acc.inverse_std(node))
    return out


def _columns(c: Consumer, dims: np.ndarray) -> np.ndarray:
    return (np.asarray(c.starts)[:, None] + dims[None, :]).ravel()


def prune_options(space: Space, ranking: Ranking, min_width: int) -> list[Option]:
    """Keep, or any width w >= min_width: parameters and the damage of D - w removals."""
    opts = [Option(space.dim, space.params_before, 0.0)]
    for w in range(min(min_width, space.dim), space.dim):
        opts.append(Option(w, space.params_at(w), ranking.damage(w)))
    return opts


def _slice_per_dim(comp, keep: np.ndarray, dim: int):
    new = comp.copy()
    for tok, v in comp.fields:
        if isinstance(v, np.ndarray) and v.ndim == 1 and len(v) == dim:
            new.set(tok, np.ascontiguousarray(v[keep]))
    new.set("<Dim>", len(keep))
    if new.has("<BlockDim>"):
        new.set("<BlockDim>", len(keep))
    return new


def _push_shift(nnet: Nnet, unit: Unit, shift: np.ndarray,
                base: dict[str, np.ndarray] | None = None) -> bool:
    """Add a constant change ``shift`` of a bias-free bottleneck producer's output to
    its consumers' biases (through a BatchNorm's scale) -- to ``base[consumer]`` instead
    of the current bias where given; False if one has no bias."""
    consumers = [nnet.components[nnet.node(n).component] for n in unit.consumers]
    if not all(len(bias(c)) for c in consumers):
        return False
    if unit.batchnorm:
        bn = nnet.components[nnet.node(unit.batchnorm).component]
        shift = shift * batchnorm_scale_offset(bn)[0]
    for name, comp in zip(unit.consumers, consumers):
        w = weight(comp).astype(np.float64)
        k = len(offsets(comp))
        delta = w @ np.tile(shift, k)
        b = bias(comp) if base is None else base[name]
        nnet.components[nnet.node(name).component] = with_weight(comp, w, b + delta)
    return True


def _set_consumer(nnet: Nnet, node_name: str, new_w: np.ndarray, new_b: np.ndarray | None,
                  shift: np.ndarray, bottlenecks: dict[str, Unit],
                  base: dict[str, np.ndarray] | None = None) -> str | None:
    """Give a consumer weights ``new_w`` and bias ``new_b`` + ``shift`` or, bias-free,
    pass the shift on (:func:`_push_shift`); a note if nothing can absorb it."""
    node = nnet.node(node_name)
    comp = nnet.components[node.component]
    if new_b is not None and len(new_b):
        nnet.components[node.component] = with_weight(comp, new_w, new_b + shift)
        return None
    nnet.components[node.component] = with_weight(comp, new_w)
    unit = bottlenecks.get(node_name)
    if unit is None or not _push_shift(nnet, unit, shift, base):
        return f"{node.component}: no bias to absorb the removed units' mean"
    return None


def apply_width(nnet: Nnet, space: Space, keep: np.ndarray, stats: dict[str, ConsumerStats],
                refit: bool, bottlenecks: dict[str, Unit]) -> list[str]:
    """Keep dimensions ``keep`` of ``space`` in place; returns notes (dropped shifts)."""
    removed = np.setdiff1d(np.arange(space.dim), keep)
    notes = []
    for name in space.producers:
        node = nnet.node(name)
        comp = nnet.components[node.component]
        b = bias(comp)
        nnet.components[node.component] = with_weight(comp, weight(comp)[keep],
                                                      b[keep] if len(b) else None)
    for name in space.passthrough:
        node = nnet.node(name)
        nnet.components[node.component] = _slice_per_dim(nnet.components[node.component],
                                                         keep, space.dim)
    for c in space.consumers:
        comp = nnet.components[nnet.node(c.node).component]
        w = weight(comp).astype(np.float64)
        cols_r = _columns(c, removed)
        cols_k = np.setdiff1d(np.arange(w.shape[1]), cols_r)
        st = stats[c.node]
        if refit:
            cov = st.covariance
            new_w = regression(w, cov[np.ix_(cols_k, cols_k)], cov[:, cols_k])
            shift = w @ st.mean - new_w @ st.mean[cols_k]
        else:
            new_w = w[:, cols_k]
            shift = w[:, cols_r] @ st.mean[cols_r]
        note = _set_consumer(nnet, c.node, new_w, bias(comp), shift, bottlenecks)
        if note:
            notes.append(note)
    return notes


def refit_closed_loop(nnet: Nnet, original: Nnet, spaces: list[Space],
                      keeps: dict[str, np.ndarray], calibration,
                      progress: bool = False) -> None:
    """Refit every consumer of the pruned ``spaces`` again, in network order, on its
    inputs in ``nnet`` (already cut) against ``original``'s (module docstring)."""
    from .calibrate import paired_cross
    wanted = _consumer_rows(original, spaces)
    rows = {p: keeps[s.name] for s in spaces for p in s.producers}   # a producer's kept rows
    removed = {n: [] for n in wanted}       # a consumer's columns of removed units
    for s in spaces:
        gone = np.setdiff1d(np.arange(s.dim), keeps[s.name])
        for c in s.consumers:
            removed[c.node].append(_columns(c, gone))

    def original_bias(name: str) -> np.ndarray:
        b = bias(original.components[original.node(name).component]).astype(np.float64)
        return b[rows[name]] if name in rows and len(b) else b

    bottlenecks = _bottlenecks(nnet)
    order = {n.name: i for i, n in enumerate(nnet.nodes)}
    nodes = sorted(wanted, key=order.__getitem__)
    if progress:
        from tqdm import tqdm
        nodes = tqdm(nodes, desc="closed loop", unit="layer", file=sys.stderr, leave=False)
    for name in nodes:
        acc = paired_cross(nnet, original, calibration, {name: wanted[name]})
        w = weight(original.components[original.node(name).component]).astype(np.float64)
        kept_columns = np.setdiff1d(np.arange(w.shape[1]), np.concatenate(removed[name]))
        m = acc.moments(name).shrunk(calibration.shrinkage, kept_columns)
        if name in rows:
            w = w[rows[name]]
        new_w = regression(w, m.covariance(), m.cross)
        shift = w @ m.target_mean - new_w @ m.mean
        unit = bottlenecks.get(name)
        base = {n: original_bias(n) for n in unit.consumers} if unit is not None else None
        _set_consumer(nnet, name, new_w, original_bias(name), shift, bottlenecks, base)


@dataclass
class PrunePlan:
    """What pruning decides from: the spaces, their consumers' statistics, and the
    order in which each space's units go (:mod:`.prune_order`)."""
    spaces: list[Space]
    stats: dict[str, ConsumerStats] = field(repr=False)
    rankings: dict[str, Ranking] = field(repr=False)

    def table(self, min_width: int) -> list[list[Option]]:
        """Per space, its width options (:func:`prune_options`)."""
        return [prune_options(s, self.rankings[s.name], min_width) for s in self.spaces]


def plan_pruning(nnet: Nnet, pattern: str, calibration, refit: bool = True,
                 floor: int = 1, progress: bool = False) -> PrunePlan:
    """Select the spaces matching ``pattern`` and rank their units on ``calibration``
    (down to ``floor`` units each)."""
    spaces = select_spaces(nnet, pattern)
    stats = consumer_statistics(nnet, spaces, calibration)
    if refit:
        rankings = {s.name: refit_ranking(nnet, s, stats, floor, progress) for s in spaces}
    else:
        rankings = {s.name: diagonal_ranking(diagonal_scores(nnet, s, stats)) for s in spaces}
    return PrunePlan(spaces, stats, rankings)


def probe_width(ranking: Ranking, min_width: int, probe_error: float) -> int:
    """The smallest width whose relative local error sqrt(lost / total) is at most
    ``probe_error`` (not below ``min_width``)."""
    ok = np.nonzero(ranking.lost <= probe_error ** 2 * max(ranking.total, 1e-30))[0]
    return max(ranking.dim - int(ok[-1]), min(min_width, ranking.dim))


def space_gains(nnet: Nnet, plan: PrunePlan, calibration, probe_error: float = 0.2,
                refit: bool = True, closed_loop=None) -> dict[str, float]:
    """Per space, g = E_out / e: the network's output error (over the output variance)
    per unit of local damage e, measured by pruning that space alone to
    :func:`probe_width` (as :func:`.sensitivity.output_gains` does for SVD) as it will
    be applied: refit, and refit closed loop on ``closed_loop`` (a Calibration) if
    given.  Measure on other audio than ``plan`` and the closed loop were fit on: a
    refit judged on its own data looks harmless (with fewer frames than units, exact)."""
    from .sensitivity import OutputProbe
    probe, gains = OutputProbe(nnet, calibration), {}
    for s in plan.spaces:
        ranking = plan.rankings[s.name]
        w = probe_width(ranking, 1, probe_error)
        local = ranking.damage(w)
        if w >= s.dim or not 0 < local < np.inf:
            continue
        work, keep = nnet.copy(), ranking.kept(w)
        apply_width(work, s, keep, plan.stats, refit, _bottlenecks(work))
        if refit and closed_loop is not None:
            refit_closed_loop(work, nnet, [s], {s.name: keep}, closed_loop)
        gains[s.name] = probe.error(work) / local
    return gains


def _bottlenecks(nnet: Nnet) -> dict[str, Unit]:
    return {u.node: u for u in find_units(nnet) if u.is_bottleneck}


def prune_compress(nnet: Nnet, opts: PruneOptions) -> list[LayerReport]:
    """Prune ``nnet`` in place; one report row per width space considered."""
    opts.check()
    if opts.calibration is None:
        raise KaldiCompressError("pruning needs calibration data (load_calibration or "
                                 "load_calibration_tables)")
    if opts.budget:
        plan = plan_pruning(nnet, opts.components, opts.calibration, opts.refit,
                            opts.min_width, opts.progress)
        chosen = within_budget(nnet, plan.spaces, plan.table(opts.min_width), opts)
        widths = {s.name: o.rank for s, o in zip(plan.spaces, chosen)}
    else:
        def width(dim: int) -> int:
            return max(min(opts.min_width, dim), int(round(opts.keep_fraction * dim)))
        spaces = select_spaces(nnet, opts.components)
        plan = plan_pruning(nnet, opts.components, opts.calibration, opts.refit,
                            min(width(s.dim) for s in spaces), opts.progress)
        widths = {s.name: width(s.dim) for s in plan.spaces}
    return apply_widths(nnet, plan, widths, opts, opts.calibration, opts.progress)


def apply_widths(nnet: Nnet, plan: PrunePlan, widths: dict[str, int], opts: WidthOptions,
                 calibration=None, progress: bool = False) -> list[LayerReport]:
    """Prune every space of ``plan`` to ``widths[space]`` in place (keeping the units its
    ranking removes last), then, with ``opts.refit`` and ``opts.closed_loop``, refit the
    consumers on ``calibration`` closed loop; one report row per space."""
    original = nnet.copy()
    bottlenecks = _bottlenecks(nnet)
    reports, keeps = [], {}
    for s in plan.spaces:
        w, ranking = widths[s.name], plan.rankings[s.name]
        label = s.name + (f" (+{len(s.producers) - 1} layers)" if len(s.producers) > 1 else "")
        if w >= s.dim:
            reports.append(LayerReport(label, "kept", "width", f"{s.dim} units", s.params_before,
                                       s.params_before, 0.0, 0.0, s.dim, s.dim))
            continue
        keeps[s.name] = ranking.kept(w)
        werr = _column_error(nnet, s, keeps[s.name])
        notes = apply_width(nnet, s, keeps[s.name], plan.stats, opts.refit, bottlenecks)
        oerr = float(np.sqrt(ranking.damage(w) / max(ranking.total, 1e-30)))
        reports.append(LayerReport(label, "prune", "width", f"{s.dim} units", s.params_before,
                                   s.params_at(w), werr, oerr, s.dim, w, note="; ".join(notes)))
    if keeps and opts.refit and opts.closed_loop and calibration is not None:
        refit_closed_loop(nnet, original, [s for s in plan.spaces if s.name in keeps], keeps,
                          calibration, progress)
    return reports


def _column_error(nnet: Nnet, space: Space, keep: np.ndarray) -> float:
    """||removed consumer columns||_F / ||consumer weights||_F, over all consumers."""
    removed = np.setdiff1d(np.arange(space.dim), keep)
    lost = whole = 0.0
    for c in space.consumers:
        w = weight(nnet.components[nnet.node(c.node).component]).astype(np.float64)
        lost += float((w[:, _columns(c, removed)] ** 2).sum())
        whole += float((w ** 2).sum())
    return float(np.sqrt(lost / max(whole, 1e-30)))
