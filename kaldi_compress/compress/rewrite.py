"""Low-rank rewrites of a unit: its fit (the spectrum to truncate) and the
network after truncating it at rank k.

* ``affine``: y = W x + b becomes (Kaldi's ``_a``/``_b`` convention)
  x -> A x -> B (A x) + b, W_k = B A.
* ``tdnn``: a TdnnComponent with the same offsets and k outputs (no bias), then a
  TdnnComponent with offset 0 mapping k -> out (with the bias).
* ``bottleneck``: the producer's semi-orthogonal factor has a flat spectrum, so
  truncating it alone wastes energy; instead the bottleneck itself is narrowed
  (see :func:`_apply_bottleneck`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import KaldiCompressError
from ..nnet3 import Nnet
from ..nnet3.components import (Component, FixedAffineComponent, LinearComponent,
                                NaturalGradientAffineComponent, TdnnComponent)
from ..nnet3.descriptors import NodeRef
from ..nnet3.graph import Node
from .lowrank import Spectrum, least_squares_right, regression, spectrum
from .units import Unit, bias, consumer_blocks, offsets, unit_matrix, weight


@dataclass(frozen=True)
class Fit:
    """A unit's low-rank fit: the matrix decomposed, its (weighted, whitened) spectrum,
    the budget's damage scale, and the input means a data-aware rewrite absorbs."""
    target: np.ndarray = field(repr=False)
    spec: Spectrum = field(repr=False)
    damage_scale: float
    center: np.ndarray | None = field(default=None, repr=False)   # mean absorbed by biases
    target_center: np.ndarray | None = field(default=None, repr=False)  # original input mean


def fit_unit(nnet: Nnet, unit: Unit, stats=None) -> Fit:
    """The unit's fit; ``stats`` is a calibrate.UnitStats or None (weights only).

    The damage of a truncation is its discarded energy times ``damage_scale``:
    1 / total energy weights-only (the relative squared error), 1 / number of
    outputs when data-aware (the mean squared error per output, in units of that
    output's standard deviation).  Data-aware units whose outputs have biases are
    truncated on the centred input, x - mu (covariance instead of second moment),
    and the biases absorb the mean exactly: b' = b + W mu_o - W_k mu.

    Closed loop (``stats.cross`` set: the unit's input x differs from the original
    network's x_o), the decomposed map is the regression of W x_o on x,
    W Cov(x_o, x) Cov(x)^{-1}, and mu_o = E[x_o]; otherwise mu_o = mu."""
    w = unit_matrix(nnet, unit).astype(np.float64)
    if stats is None:
        spec = spectrum(w)
        return Fit(w, spec, 1.0 / max(float(spec.energy.sum()), 1e-30))
    c = stats.covariance() if unit.has_bias else stats.moment
    if stats.cross is not None:
        cross = stats.cross if unit.has_bias else \
            stats.cross + np.outer(stats.target_mean, stats.mean)
        w = regression(w, c, cross)
    center = target_center = None
    if unit.has_bias:
        center = stats.mean
        target_center = stats.target_mean if stats.target_mean is not None else stats.mean
    return Fit(w, spectrum(w, c, stats.row_weight), 1.0 / unit.out_dim, center, target_center)


def _ranks(comp: Component, rows: int, cols: int) -> dict:
    """Natural-gradient ranks no larger than InitFromConfig's defaults for the new shape."""
    out = {}
    if comp.has("<RankInOut>"):
        ri, ro = comp["<RankInOut>"]
        out["<RankInOut>"] = (min(ri, (cols + 1) // 2), min(ro, (rows + 1) // 2))
    if comp.has("<RankIn>"):
        out["<RankIn>"] = min(comp["<RankIn>"], (cols + 1) // 2)
        out["<RankOut>"] = min(comp["<RankOut>"], (rows + 1) // 2)
    return out


def with_weight(comp: Component, w: np.ndarray, b: np.ndarray | None = None) -> Component:
    new = comp.copy()
    new.set("<Params>" if isinstance(comp, LinearComponent) else "<LinearParams>",
            np.ascontiguousarray(w, dtype=np.float32))
    if b is not None:
        new.set("<BiasParams>", np.ascontiguousarray(b, dtype=np.float32))
    for tok, v in _ranks(comp, *w.shape).items():
        new.set(tok, v)
    return new


def apply_rank(nnet: Nnet, unit: Unit, fit: Fit, k: int, stats=None) -> None:
    """Rewrite ``unit`` in place at rank ``k`` of ``fit`` (with ``stats`` when data-aware)."""
    if unit.is_bottleneck:
        _apply_bottleneck(nnet, unit, fit, k, stats)
    else:
        _apply_split(nnet, unit, fit, k)


def refit_in_place(nnet: Nnet, unit: Unit, stats) -> None:
    """Closed loop, no truncation: replace the unit's map by its target (the regression
    of the original outputs on the current inputs, see :func:`fit_unit`), keeping its
    structure and size.  Bottlenecks keep their width (a rotation)."""
    fit = fit_unit(nnet, unit, stats)
    if unit.is_bottleneck:
        apply_rank(nnet, unit, fit, unit.full_rank, stats)
        return
    comp = nnet.components[unit.name]
    new_bias = None
    if fit.center is not None:
        w = weight(comp).astype(np.float64)
        new_bias = bias(comp) + w @ fit.target_center - fit.target @ fit.center
    nnet.components[unit.name] = with_weight(comp, fit.target, new_bias)


def _apply_split(nnet: Nnet, unit: Unit, fit: Fit, k: int) -> None:
    """Affine/TDNN unit (Kaldi's ``_a``/``_b`` convention): y = W x + b becomes
    x -> A x -> B (A x) + b with W_k = B A; a TDNN keeps its offsets in A (no bias)
    and B is offset 0."""
    comp = nnet.components[unit.name]
    a, b = fit.spec.factors(k)
    upd = comp.updatable_config() if comp.is_updatable else {}
    new_bias = bias(comp)
    if fit.center is not None:
        w = weight(comp).astype(np.float64)
        new_bias = bias(comp) + w @ fit.target_center - (b @ a) @ fit.center
    if isinstance(comp, TdnnComponent):
        first = TdnnComponent.create(a, None, comp.time_offsets, upd,
                                     use_natural_gradient=comp["<UseNaturalGradient>"])
        second = TdnnComponent.create(b, new_bias if len(new_bias) else None, [0], upd,
                                      use_natural_gradient=comp["<UseNaturalGradient>"])
    elif isinstance(comp, FixedAffineComponent):
        first = FixedAffineComponent.build({"<LinearParams>": a.astype(np.float32),
                                            "<BiasParams>": np.zeros(k, np.float32)})
        second = FixedAffineComponent.build({"<LinearParams>": b.astype(np.float32),
                                             "<BiasParams>": new_bias.astype(np.float32)})
    elif isinstance(comp, LinearComponent):
        first, second = LinearComponent.create(a, upd), LinearComponent.create(b, upd)
    else:
        first = LinearComponent.create(a, upd)
        second = NaturalGradientAffineComponent.create(b, new_bias, upd)
    split_node(nnet, unit.node, first, second)


def split_node(nnet: Nnet, node_name: str, first: Component, second: Component) -> None:
    """Kaldi apply-svd's rewrite: node N (component C) becomes N_a (C_a) then N_b (C_b),
    every reference to N now reads N_b, C is removed and C_a, C_b are appended."""
    node = nnet.node(node_name)
    comp_name = node.component
    names = (comp_name + "_a", comp_name + "_b")
    for n in names:
        if n in nnet.components:
            raise KaldiCompressError(f"the network already has a component named {n}")
    nnet.rename_references({node_name: node_name + "_b"})
    node = nnet.node(node_name)
    a = Node("component-node", node_name + "_a", component=names[0], descriptor=node.descriptor)
    b = Node("component-node", node_name + "_b", component=names[1],
             descriptor=NodeRef(node_name + "_a"))
    nnet.replace_nodes(node_name, [a, b])
    if not any(n.kind == "component-node" and n.component == comp_name for n in nnet.nodes):
        del nnet.components[comp_name]
    nnet.components[names[0]] = first
    nnet.components[names[1]] = second


def _tap_refit(w: np.ndarray, p: np.ndarray, taps, centred: bool) -> tuple[np.ndarray, np.ndarray]:
    """Exact least squares for a K-tap consumer y = W z + b, z = [h(t+o_1); ...]:
    with Q = I_K (x) P, the new weight is B = T S Q^T (Q S Q^T)^{-1}, where S is the
    (centred) second moment of z and T = W (open loop) or the regression of W z_o on
    z (closed loop); returns B and the bias correction W E[z_o] - B Q E[z]."""
    s = taps.covariance() if centred else taps.moment
    q = np.kron(np.eye(w.shape[1] // p.shape[1]), p)
    target = w
    if taps.cross is not None:
        cross = taps.cross if centred else taps.cross + np.outer(taps.target_mean, taps.mean)
        target = regression(w, s, cross)
    b = least_squares_right(target, q, s)
    z_o = taps.target_mean if taps.target_mean is not None else taps.mean
    return b, (w @ z_o - b @ (q @ taps.mean)) if centred else np.zeros(w.shape[0])


def _apply_bottleneck(nnet: Nnet, unit: Unit, fit: Fit, k: int, stats) -> None:
    """Narrow the bottleneck to k: with S the stacked consumer blocks, P (k x mid,
    orthonormal rows) the top right singular vectors of S (whitened by E[h h^T] when
    data-aware), L' = P L and F'_j the matching blocks of argmin_B ||(S - B P) C^{1/2}||.
    Types and node names stay the same; a BatchNorm in between is folded into the
    consumers (exact in test mode) and removed."""
    s_mat, layout, scale, shift = consumer_blocks(nnet, unit)
    p = fit.spec.projection(k)
    c = None if stats is None else stats.covariance() if fit.center is not None \
        else stats.moment
    b_stack = least_squares_right(fit.target, p, c)
    producer = nnet.components[unit.name]
    nnet.components[unit.name] = with_weight(producer, p @ weight(producer).astype(np.float64))
    row = 0
    new_blocks: dict[str, list[np.ndarray]] = {}
    for name, j, rows in layout:
        new_blocks.setdefault(name, []).append(b_stack[row:row + rows])
        row += rows
    mid = unit.full_rank
    row = 0
    for name in unit.consumers:
        node = nnet.node(name)
        comp = nnet.components[node.component]
        w = weight(comp).astype(np.float64)
        new_b = None
        if shift is not None or fit.center is not None:
            if not len(bias(comp)):
                raise KaldiCompressError(f"cannot fold a BatchNorm into bias-free {node.component}")
            new_b = bias(comp).astype(np.float64)
            for j in range(len(offsets(comp))):
                rows = slice(row, row + w.shape[0])
                if shift is not None:
                    new_b = new_b + w[:, j * mid:(j + 1) * mid] @ shift
                if fit.center is not None:
                    new_b = new_b + s_mat[rows] @ fit.target_center \
                        - b_stack[rows] @ (p @ fit.center)
                row += w.shape[0]
        new_w = np.hstack(new_blocks[name])
        taps = stats.taps.get(name) if stats is not None else None
        if taps is not None:
            new_w, correction = _tap_refit(w, p, taps, fit.center is not None)
            if fit.center is not None:
                new_b = bias(comp).astype(np.float64) + correction
        nnet.components[node.component] = with_weight(comp, new_w, new_b)
    if unit.batchnorm:
        bn_node = nnet.node(unit.batchnorm)
        nnet.rename_references({unit.batchnorm: unit.node})
        nnet.nodes = [n for n in nnet.nodes if n.name != unit.batchnorm]
        if not any(n.kind == "component-node" and n.component == bn_node.component
                   for n in nnet.nodes):
            del nnet.components[bn_node.component]
