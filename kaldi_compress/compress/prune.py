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

Which units go: the damage of removing dimension j is, summed over consumers c,
sum_{col of j} ||d_c * W_c[:, col]||^2 Var(z_col) / out_dim_c (d_c = 1 / std of c's
outputs) -- the mean squared output error per output, in units of its standard
deviation, on the scale of the data-aware SVD's damage.  A space offers every width
w, damage the sum of its D - w smallest scores; :func:`.spine.within_budget` or a
per-space ``keep_fraction`` decides.  Spaces are used only if they share no
component with a wider one (the 64-wide TDNN-F bottlenecks are SVD's: they share
the ``.linear`` and ``.affine`` layers with the residual stream).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..errors import KaldiCompressError
from ..nnet3 import Nnet
from ..nnet3.components.base import match_glob
from .budget import Option
from .rewrite import with_weight
from .spine import CompressOptions, LayerReport, nothing_matched, within_budget
from .units import Unit, batchnorm_scale_offset, bias, find_units, offsets, weight
from .widths import Consumer, Space, find_spaces


@dataclass
class WidthOptions:
    """How widths are cut, for every command that prunes."""
    refit: bool = True                    # least-squares refit of the consumers
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


def consumer_statistics(nnet: Nnet, spaces: list[Space], calibration) -> dict[str, ConsumerStats]:
    """Per consumer node: mean and covariance of its (spliced) input, output spreads."""
    from .calibrate import TAPS, MomentAccumulator
    wanted, keys = {}, {}
    for s in spaces:
        for c in s.consumers:
            multi = len(offsets(nnet.components[nnet.node(c.node).component])) > 1
            keys[c.node] = TAPS + c.node if multi else c.node
            wanted[keys[c.node]] = (c.node, "taps" if multi else "input")
    acc = MomentAccumulator(wanted, set(keys))
    calibration.run(nnet, acc)
    out = {}
    for node, key in keys.items():
        if key not in acc.sums:
            raise KaldiCompressError(f"calibration never computed {node} (a branch 'output' "
                                     "does not use? prepare the model for test first)")
        mean = acc.mean(key)
        out[node] = ConsumerStats(acc.moment(key) - np.outer(mean, mean), mean,
                                  acc.inverse_std(node))
    return out


def _columns(c: Consumer, dims: np.ndarray) -> np.ndarray:
    return (np.asarray(c.starts)[:, None] + dims[None, :]).ravel()


def unit_scores(nnet: Nnet, space: Space, stats: dict[str, ConsumerStats]) -> np.ndarray:
    """Damage of removing each dimension alone (see the module docstring)."""
    scores = np.zeros(space.dim)
    for c in space.consumers:
        w = weight(nnet.components[nnet.node(c.node).component]).astype(np.float64)
        st = stats[c.node]
        energy = ((w * st.inverse_std[:, None]) ** 2).sum(0) * np.diag(st.covariance)
        for s in c.starts:
            scores += energy[s:s + space.dim] / w.shape[0]
    return scores


def prune_options(space: Space, scores: np.ndarray, min_width: int) -> list[Option]:
    """Keep, or any width w >= min_width: parameters and the D - w smallest scores."""
    tail = np.concatenate([[0.0], np.cumsum(np.sort(scores))])
    opts = [Option(space.dim, space.params_before, 0.0)]
    for w in range(min(min_width, space.dim), space.dim):
        opts.append(Option(w, space.params_at(w), float(tail[space.dim - w])))
    return opts


def kept_dims(scores: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` dimensions of highest score, in their original order."""
    return np.sort(np.argsort(-scores, kind="stable")[:width])


def _slice_per_dim(comp, keep: np.ndarray, dim: int):
    new = comp.copy()
    for tok, v in comp.fields:
        if isinstance(v, np.ndarray) and v.ndim == 1 and len(v) == dim:
            new.set(tok, np.ascontiguousarray(v[keep]))
    new.set("<Dim>", len(keep))
    if new.has("<BlockDim>"):
        new.set("<BlockDim>", len(keep))
    return new


def _push_shift(nnet: Nnet, unit: Unit, shift: np.ndarray) -> bool:
    """Add a constant change ``shift`` of a bias-free bottleneck producer's output to
    its consumers' biases (through a BatchNorm's scale); False if one has no bias."""
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
        node = nnet.node(name)
        nnet.components[node.component] = with_weight(comp, w, bias(comp) + delta)
    return True


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
        node = nnet.node(c.node)
        comp = nnet.components[node.component]
        w = weight(comp).astype(np.float64)
        cols_r = _columns(c, removed)
        cols_k = np.setdiff1d(np.arange(w.shape[1]), cols_r)
        st = stats[c.node]
        if refit:
            cov = st.covariance
            ck = cov[np.ix_(cols_k, cols_k)]
            ridge = 1e-8 * np.trace(ck) / max(len(ck), 1)
            new_w = np.linalg.solve(ck + ridge * np.eye(len(ck)), cov[cols_k] @ w.T).T
            shift = w @ st.mean - new_w @ st.mean[cols_k]
        else:
            new_w = w[:, cols_k]
            shift = w[:, cols_r] @ st.mean[cols_r]
        b = bias(comp)
        if len(b):
            nnet.components[node.component] = with_weight(comp, new_w, b + shift)
            continue
        nnet.components[node.component] = with_weight(comp, new_w)
        unit = bottlenecks.get(c.node)
        if unit is None or not _push_shift(nnet, unit, shift):
            notes.append(f"{node.component}: no bias to absorb the removed units' mean")
    return notes


@dataclass
class PrunePlan:
    """What pruning decides from: the spaces, their consumers' statistics, unit scores."""
    spaces: list[Space]
    stats: dict[str, ConsumerStats] = field(repr=False)
    scores: dict[str, np.ndarray] = field(repr=False)

    def table(self, min_width: int) -> list[list[Option]]:
        """Per space, its width options (:func:`prune_options`)."""
        return [prune_options(s, self.scores[s.name], min_width) for s in self.spaces]


def plan_pruning(nnet: Nnet, pattern: str, calibration) -> PrunePlan:
    """Select the spaces matching ``pattern`` and score their units on ``calibration``."""
    spaces = select_spaces(nnet, pattern)
    stats = consumer_statistics(nnet, spaces, calibration)
    return PrunePlan(spaces, stats, {s.name: unit_scores(nnet, s, stats) for s in spaces})


def probe_width(scores: np.ndarray, min_width: int, probe_error: float) -> int:
    """The smallest width whose relative local error sqrt(lost / total) is at most
    ``probe_error`` (not below ``min_width``)."""
    lost = np.concatenate([[0.0], np.cumsum(np.sort(scores))])   # lost[r]: r removed
    ok = np.nonzero(lost <= probe_error ** 2 * max(lost[-1], 1e-30))[0]
    return max(len(scores) - int(ok[-1]), min(min_width, len(scores)))


def space_gains(nnet: Nnet, plan: PrunePlan, calibration, probe_error: float = 0.2,
                refit: bool = True) -> dict[str, float]:
    """Per space, g = E_out / e: the network's output error (over the output variance)
    per unit of local damage e (removed scores), measured by pruning that space alone
    to :func:`probe_width` (as :func:`.sensitivity.output_gains` does for SVD).  Measure
    on other audio than ``plan`` was fit on: a refit judged on its own data looks
    harmless (with fewer frames than units, exact)."""
    from .sensitivity import OutputProbe
    probe, gains = OutputProbe(nnet, calibration), {}
    for s in plan.spaces:
        sc = plan.scores[s.name]
        w = probe_width(sc, 1, probe_error)
        local = float(np.sort(sc)[:s.dim - w].sum())
        if w >= s.dim or local <= 0:
            continue
        work = nnet.copy()
        apply_width(work, s, kept_dims(sc, w), plan.stats, refit, _bottlenecks(work))
        gains[s.name] = probe.error(work) / local
    return gains


def _bottlenecks(nnet: Nnet) -> dict[str, Unit]:
    return {u.node: u for u in find_units(nnet) if u.is_bottleneck}


def prune_compress(nnet: Nnet, opts: PruneOptions) -> list[LayerReport]:
    """Prune ``nnet`` in place; one report row per width space considered."""
    opts.check()
    if opts.calibration is None:
        raise KaldiCompressError("pruning needs calibration data (--calibration-data and "
                                 "--model-dir)")
    plan = plan_pruning(nnet, opts.components, opts.calibration)
    if opts.budget:
        chosen = within_budget(nnet, plan.spaces, plan.table(opts.min_width), opts)
        widths = {s.name: o.rank for s, o in zip(plan.spaces, chosen)}
    else:
        widths = {s.name: max(min(opts.min_width, s.dim), int(round(opts.keep_fraction * s.dim)))
                  for s in plan.spaces}
    return apply_widths(nnet, plan, widths, opts.refit)


def apply_widths(nnet: Nnet, plan: PrunePlan, widths: dict[str, int],
                 refit: bool = True) -> list[LayerReport]:
    """Prune every space of ``plan`` to ``widths[space]`` in place (keeping its units of
    highest score); one report row per space."""
    bottlenecks = _bottlenecks(nnet)
    reports = []
    for s in plan.spaces:
        w, sc = widths[s.name], plan.scores[s.name]
        total = float(sc.sum())
        label = s.name + (f" (+{len(s.producers) - 1} layers)" if len(s.producers) > 1 else "")
        if w >= s.dim:
            reports.append(LayerReport(label, "kept", "width", f"{s.dim} units", s.params_before,
                                       s.params_before, 0.0, 0.0, s.dim, s.dim))
            continue
        keep = kept_dims(sc, w)
        lost = float(np.sort(sc)[:s.dim - w].sum())
        werr = _column_error(nnet, s, keep)
        notes = apply_width(nnet, s, keep, plan.stats, refit, bottlenecks)
        reports.append(LayerReport(label, "prune", "width", f"{s.dim} units", s.params_before,
                                   s.params_at(w), werr, float(np.sqrt(lost / max(total, 1e-30))),
                                   s.dim, w, note="; ".join(notes)))
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
