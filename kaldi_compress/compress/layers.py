"""Compressible units of a network and how to rewrite them at a given rank.

Three kinds of unit:

* ``affine``: one Affine/NaturalGradientAffine/Linear/FixedAffine layer y = W x + b,
  replaced (Kaldi's ``_a``/``_b`` convention) by x -> A x -> B (A x) + b.
* ``tdnn``: a TdnnComponent y(t) = b + sum_k W_k x(t + o_k) with several offsets,
  replaced by a TdnnComponent with the same offsets and k outputs (no bias), then a
  TdnnComponent with offset 0 mapping k -> out (with the bias).
* ``bottleneck``: a bias-free producer h = L x (a TDNN-F ``.linear``, or a Linear
  layer), optionally through a test-mode BatchNorm, read only by affine-like
  consumers y = sum_j F_j h(t + o_j) + b (a TDNN-F ``.affine``, an output layer).
  The producer's semi-orthogonal factor has a flat spectrum, so truncating it alone
  wastes energy; instead the bottleneck itself is narrowed: with S the consumers'
  blocks F_j stacked vertically, choose P (k x mid, orthonormal rows) from the top
  right singular vectors of S (whitened by E[h h^T] when data-aware), set
  L' = P L and F'_j = the matching blocks of argmin_B ||(S - B P) C^{1/2}||.
  Types and node names stay the same (a thinner layer); a BatchNorm in between is
  folded into the consumers (exact in test mode) and removed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import KaldiCompressError
from ..nnet3 import Nnet
from ..nnet3.components import (AffineComponent, BatchNormComponent, Component,
                                FixedAffineComponent, LinearComponent,
                                NaturalGradientAffineComponent, TdnnComponent)
from ..nnet3.descriptors import NodeRef
from ..nnet3.graph import Node
from .lowrank import Spectrum, least_squares_right, spectrum

AFFINE_TYPES = (AffineComponent, LinearComponent, FixedAffineComponent)
CONSUMER_TYPES = (AffineComponent, LinearComponent, FixedAffineComponent, TdnnComponent)


def weight(comp: Component) -> np.ndarray:
    """The out x (in * num_offsets) weight matrix of an affine-like component."""
    return comp.linear_params


def bias(comp: Component) -> np.ndarray:
    b = comp.get("<BiasParams>")
    return np.zeros(0, np.float32) if b is None else b


def offsets(comp: Component) -> list[int]:
    return comp.time_offsets if isinstance(comp, TdnnComponent) else [0]


def counted(comp: Component) -> int:
    """Parameters of one component as Kaldi counts them (updatable only)."""
    return comp.num_parameters if comp.is_updatable else 0


def batchnorm_scale_offset(bn: BatchNormComponent) -> tuple[np.ndarray, np.ndarray]:
    """Test-mode BatchNorm as y = x * scale + offset (per dimension)."""
    dim, block = bn["<Dim>"], bn["<BlockDim>"]
    var = np.maximum(bn["<StatsVar>"].astype(np.float64), 0.0)
    scale = float(bn["<TargetRms>"]) / np.sqrt(var + float(bn["<Epsilon>"]))
    offset = -bn["<StatsMean>"].astype(np.float64) * scale
    reps = dim // block
    return np.tile(scale, reps), np.tile(offset, reps)


@dataclass
class Unit:
    """A compressible part of the network (see the module docstring)."""
    kind: str                          # "affine" | "tdnn" | "bottleneck"
    name: str                          # main component (the producer for bottlenecks)
    node: str                          # its node
    components: tuple[str, ...]        # every component the rewrite touches
    full_rank: int                     # current rank (bottleneck width for bottlenecks)
    params_before: int                 # as Kaldi counts them
    per_rank: int                      # counted parameters per unit of rank
    fixed: int                         # counted parameters independent of the rank
    consumers: tuple[str, ...] = ()    # bottleneck: consumer nodes
    batchnorm: str | None = None       # bottleneck: BatchNorm node folded away
    counts: bool = True                # whether its parameters count (not FixedAffine)
    weight_entries: int = 0            # affine/tdnn: entries of W
    out_dim: int = 0                   # outputs (summed over consumers)
    has_bias: bool = False             # every output has a bias (can absorb a mean)
    spec: Spectrum | None = field(default=None, repr=False)
    damage_scale: float = 1.0          # set with the spectrum (see compute_spectrum)
    center: np.ndarray | None = field(default=None, repr=False)  # input mean absorbed by biases
    target_center: np.ndarray | None = field(default=None, repr=False)  # original input mean
    target: np.ndarray | None = field(default=None, repr=False)  # the matrix decomposed

    def shrinkage(self, k: int) -> float:
        """Kaldi's shrinkage ratio: weights after / weights before (biases ignored)."""
        return k / self.full_rank if self.kind == "bottleneck" else \
            k * self.per_rank / self.weight_entries

    def params_at(self, k: int) -> int:
        """Counted parameters after rewriting at rank k (k = full_rank: unchanged)."""
        if k >= self.full_rank and self.kind == "bottleneck":
            return self.params_before
        return self.fixed + self.per_rank * k if self.counts else 0

    def describe(self) -> str:
        return {"affine": "affine", "tdnn": "tdnn",
                "bottleneck": "bottleneck" + ("+bn" if self.batchnorm else "")}[self.kind]


def _plain_input(node: Node) -> str | None:
    return node.descriptor.name if isinstance(node.descriptor, NodeRef) else None


def find_units(nnet: Nnet) -> list[Unit]:
    """Every compressible unit, in node order; each component is in at most one."""
    users = nnet.consumers()
    comp_of = {n.name: nnet.components[n.component]
               for n in nnet.nodes if n.kind == "component-node"}
    taken: set[str] = set()
    units: list[Unit] = []
    for node in nnet.nodes:
        if node.kind != "component-node" or node.component in taken:
            continue
        comp = comp_of[node.name]
        unit = _bottleneck(nnet, node, comp, users, comp_of)
        if unit is None:
            unit = _single(node, comp)
        if unit is not None and not taken.intersection(unit.components):
            taken.update(unit.components)
            units.append(unit)
    return units


def single_unit(nnet: Nnet, node_name: str) -> Unit:
    """The node's layer as a stand-alone ``affine``/``tdnn`` unit (no bottleneck grouping)."""
    node = nnet.node(node_name)
    unit = _single(node, nnet.components[node.component]) if node.component else None
    if unit is None:
        raise KaldiCompressError(f"node {node_name} is not an affine-like layer")
    return unit


def _single(node: Node, comp: Component) -> Unit | None:
    if isinstance(comp, TdnnComponent) and len(comp.time_offsets) > 1:
        w = weight(comp)
        out, cols = w.shape
        return Unit("tdnn", node.component, node.name, (node.component,), min(out, cols),
                    counted(comp), cols + out, len(bias(comp)), weight_entries=out * cols,
                    out_dim=out, has_bias=bool(len(bias(comp))))
    if isinstance(comp, AFFINE_TYPES) or (isinstance(comp, TdnnComponent)
                                          and comp.time_offsets == [0]):
        out, inp = weight(comp).shape
        return Unit("affine", node.component, node.name, (node.component,), min(out, inp),
                    counted(comp), inp + out, len(bias(comp)),
                    counts=comp.is_updatable, weight_entries=out * inp, out_dim=out,
                    has_bias=bool(len(bias(comp))))
    return None


def _bottleneck(nnet: Nnet, node: Node, comp: Component, users, comp_of) -> Unit | None:
    """A bias-free producer whose output only affine-like consumers read, plainly."""
    if not isinstance(comp, (LinearComponent, TdnnComponent)) or len(bias(comp)):
        return None
    readers = users[node.name]
    bn_node = None
    if len(readers) == 1 and readers[0].kind == "component-node" \
            and isinstance(comp_of[readers[0].name], BatchNormComponent) \
            and _plain_input(readers[0]) == node.name:
        bn_node = readers[0]
        readers = users[bn_node.name]
    source = bn_node.name if bn_node else node.name
    if not readers or any(r.kind != "component-node" or _plain_input(r) != source
                          or not isinstance(comp_of[r.name], CONSUMER_TYPES)
                          or r.component == node.component for r in readers):
        return None
    if len({r.component for r in readers}) != len(readers):
        return None  # a consumer component shared between nodes
    mid, cols = weight(comp).shape
    per_rank = cols
    params = counted(comp)
    fixed = out_dim = 0
    for r in readers:
        c = comp_of[r.name]
        out = weight(c).shape[0]
        per_rank += out * len(offsets(c))
        params += counted(c)
        fixed += len(bias(c))
        out_dim += out
    names = (node.component,) + ((bn_node.component,) if bn_node else ()) + \
        tuple(r.component for r in readers)
    return Unit("bottleneck", node.component, node.name, names, mid, params, per_rank, fixed,
                consumers=tuple(r.name for r in readers),
                batchnorm=bn_node.name if bn_node else None, out_dim=out_dim,
                has_bias=all(len(bias(comp_of[r.name])) for r in readers))


# ---------------------------------------------------------------------------
# The matrix each unit truncates, and the rewrite at rank k.

def consumer_blocks(nnet: Nnet, unit: Unit) -> tuple[np.ndarray, list[tuple[str, int, int]],
                                                     np.ndarray | None, np.ndarray | None]:
    """Stacked consumer blocks S (rows: consumer, offset, output) with a BatchNorm
    folded in, their row layout, and the BatchNorm (scale, offset) if any."""
    scale = shift = None
    if unit.batchnorm:
        bn = nnet.components[nnet.node(unit.batchnorm).component]
        scale, shift = batchnorm_scale_offset(bn)
    blocks, layout = [], []
    mid = unit.full_rank
    for name in unit.consumers:
        c = nnet.components[nnet.node(name).component]
        w = weight(c).astype(np.float64)
        for j in range(len(offsets(c))):
            blk = w[:, j * mid:(j + 1) * mid]
            blocks.append(blk * scale[None, :] if scale is not None else blk)
            layout.append((name, j, blk.shape[0]))
    return np.vstack(blocks), layout, scale, shift


def unit_matrix(nnet: Nnet, unit: Unit) -> np.ndarray:
    """The matrix whose truncated SVD defines the unit's rewrite."""
    if unit.kind == "bottleneck":
        return consumer_blocks(nnet, unit)[0]
    return weight(nnet.components[unit.name])


def compute_spectrum(nnet: Nnet, unit: Unit, stats=None) -> Spectrum:
    """The unit's (weighted, whitened) spectrum; ``stats`` is a calibrate.UnitStats or None.

    Also sets ``unit.damage_scale``: the budget's damage of a truncation is its
    discarded energy times this -- 1 / total energy weights-only (the relative squared
    error), 1 / number of outputs when data-aware (the mean squared error per output,
    in units of that output's standard deviation).  Data-aware units whose outputs
    have biases are truncated on the centred input, x - mu (covariance instead of
    second moment), and the biases absorb the mean exactly: b' = b + W mu_o - W_k mu.

    Closed loop (``stats.cross`` set: the unit's input x differs from the original
    network's x_o), the decomposed map is the regression of W x_o on x,
    W Cov(x_o, x) Cov(x)^{-1}, and mu_o = E[x_o]; otherwise mu_o = mu."""
    w = unit_matrix(nnet, unit).astype(np.float64)
    unit.center = unit.target_center = None
    if stats is None:
        unit.target = w
        unit.spec = spectrum(w)
        unit.damage_scale = 1.0 / max(float(unit.spec.energy.sum()), 1e-30)
        return unit.spec
    c = stats.covariance() if unit.has_bias else stats.moment
    if stats.cross is not None:
        cross = stats.cross if unit.has_bias else \
            stats.cross + np.outer(stats.target_mean, stats.mean)
        w = w @ np.linalg.solve(c + 1e-8 * np.trace(c) / len(c) * np.eye(len(c)), cross.T).T
    if unit.has_bias:
        unit.center = stats.mean
        unit.target_center = stats.target_mean if stats.target_mean is not None else stats.mean
    unit.target = w
    unit.spec = spectrum(w, c, stats.row_weight)
    unit.damage_scale = 1.0 / unit.out_dim
    return unit.spec


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


def _with_weight(comp: Component, w: np.ndarray, b: np.ndarray | None = None) -> Component:
    new = comp.copy()
    new.set("<Params>" if isinstance(comp, LinearComponent) else "<LinearParams>",
            np.ascontiguousarray(w, dtype=np.float32))
    if b is not None:
        new.set("<BiasParams>", np.ascontiguousarray(b, dtype=np.float32))
    for tok, v in _ranks(comp, *w.shape).items():
        new.set(tok, v)
    return new


def apply_rank(nnet: Nnet, unit: Unit, k: int, stats=None) -> None:
    """Rewrite ``unit`` in place at rank ``k`` (with ``stats`` when data-aware)."""
    if unit.spec is None:
        compute_spectrum(nnet, unit, stats)
    if unit.kind == "bottleneck":
        _apply_bottleneck(nnet, unit, k, stats)
    else:
        _apply_split(nnet, unit, k)


def refit_in_place(nnet: Nnet, unit: Unit, stats) -> None:
    """Closed loop, no truncation: replace the unit's map by its target (the regression
    of the original outputs on the current inputs, see :func:`compute_spectrum`),
    keeping its structure and size.  Bottlenecks keep their width (a rotation)."""
    compute_spectrum(nnet, unit, stats)
    if unit.kind == "bottleneck":
        apply_rank(nnet, unit, unit.full_rank, stats)
        return
    comp = nnet.components[unit.name]
    new_bias = None
    if unit.center is not None:
        w = weight(comp).astype(np.float64)
        new_bias = bias(comp) + w @ unit.target_center - unit.target @ unit.center
    nnet.components[unit.name] = _with_weight(comp, unit.target, new_bias)


def _apply_split(nnet: Nnet, unit: Unit, k: int) -> None:
    comp = nnet.components[unit.name]
    a, b = unit.spec.factors(k)
    upd = comp.updatable_config() if comp.is_updatable else {}
    new_bias = bias(comp)
    if unit.center is not None:
        w = weight(comp).astype(np.float64)
        new_bias = bias(comp) + w @ unit.target_center - (b @ a) @ unit.center
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
        target = w @ np.linalg.solve(s + 1e-8 * np.trace(s) / len(s) * np.eye(len(s)), cross.T).T
    b = least_squares_right(target, q, s)
    z_o = taps.target_mean if taps.target_mean is not None else taps.mean
    return b, (w @ z_o - b @ (q @ taps.mean)) if centred else np.zeros(w.shape[0])


def _apply_bottleneck(nnet: Nnet, unit: Unit, k: int, stats) -> None:
    s_mat, layout, scale, shift = consumer_blocks(nnet, unit)
    p = unit.spec.projection(k)
    c = None if stats is None else stats.covariance() if unit.center is not None \
        else stats.moment
    b_stack = least_squares_right(unit.target, p, c)
    producer = nnet.components[unit.name]
    nnet.components[unit.name] = _with_weight(producer, p @ weight(producer).astype(np.float64))
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
        if shift is not None or unit.center is not None:
            if not len(bias(comp)):
                raise KaldiCompressError(f"cannot fold a BatchNorm into bias-free {node.component}")
            new_b = bias(comp).astype(np.float64)
            for j in range(len(offsets(comp))):
                rows = slice(row, row + w.shape[0])
                if shift is not None:
                    new_b = new_b + w[:, j * mid:(j + 1) * mid] @ shift
                if unit.center is not None:
                    new_b = new_b + s_mat[rows] @ unit.target_center \
                        - b_stack[rows] @ (p @ unit.center)
                row += w.shape[0]
        new_w = np.hstack(new_blocks[name])
        taps = stats.taps.get(name) if stats is not None else None
        if taps is not None:
            new_w, correction = _tap_refit(w, p, taps, unit.center is not None)
            if unit.center is not None:
                new_b = bias(comp).astype(np.float64) + correction
        nnet.components[node.component] = _with_weight(comp, new_w, new_b)
    if unit.batchnorm:
        bn_node = nnet.node(unit.batchnorm)
        nnet.rename_references({unit.batchnorm: unit.node})
        nnet.nodes = [n for n in nnet.nodes if n.name != unit.batchnorm]
        if not any(n.kind == "component-node" and n.component == bn_node.component
                   for n in nnet.nodes):
            del nnet.components[bn_node.component]
