"""Compressible units of a network: which layers a method may rewrite together.

Three kinds of unit:

* ``affine``: one Affine/NaturalGradientAffine/Linear/FixedAffine layer y = W x + b.
* ``tdnn``: a TdnnComponent y(t) = b + sum_k W_k x(t + o_k) with several offsets.
* ``bottleneck``: a bias-free producer h = L x (a TDNN-F ``.linear``, or a Linear
  layer), optionally through a test-mode BatchNorm, read only by affine-like
  consumers y = sum_j F_j h(t + o_j) + b (a TDNN-F ``.affine``, an output layer).
  Its matrix is S, the consumers' blocks F_j stacked vertically (BatchNorm scale
  folded in): narrowing the bottleneck is a truncation of S.

A :class:`Unit` is structure only, fixed when the network is read; how a method
fits and rewrites it lives with the method (:mod:`.rewrite` for low rank).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from ..errors import KaldiCompressError
from ..nnet3 import Nnet
from ..nnet3.components import (AffineComponent, BatchNormComponent, Component,
                                FixedAffineComponent, LinearComponent, TdnnComponent)
from ..nnet3.descriptors import NodeRef
from ..nnet3.graph import Node

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


class UnitKind(str, Enum):
    """What a unit is, hence how it is rewritten (see the module docstring)."""
    AFFINE = "affine"
    TDNN = "tdnn"
    BOTTLENECK = "bottleneck"


@dataclass(frozen=True)
class Unit:
    """A compressible part of the network: its structure only (fits are
    :class:`.rewrite.Fit`, choices are budget options)."""
    kind: UnitKind
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

    @property
    def is_bottleneck(self) -> bool:
        return self.kind is UnitKind.BOTTLENECK

    @property
    def members(self) -> tuple[str, ...]:
        """The nodes whose matrices the unit holds: the layer, or producer and consumers."""
        return (self.node, *self.consumers)

    def shrinkage(self, k: int) -> float:
        """Kaldi's shrinkage ratio: weights after / weights before (biases ignored)."""
        return k / self.full_rank if self.is_bottleneck else \
            k * self.per_rank / self.weight_entries

    def params_at(self, k: int) -> int:
        """Counted parameters after rewriting at rank k (k = full_rank: unchanged)."""
        if k >= self.full_rank and self.is_bottleneck:
            return self.params_before
        return self.fixed + self.per_rank * k if self.counts else 0

    def describe(self) -> str:
        return self.kind.value + ("+bn" if self.batchnorm else "")


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
        return Unit(UnitKind.TDNN, node.component, node.name, (node.component,), min(out, cols),
                    counted(comp), cols + out, len(bias(comp)), weight_entries=out * cols,
                    out_dim=out, has_bias=bool(len(bias(comp))))
    if isinstance(comp, AFFINE_TYPES) or (isinstance(comp, TdnnComponent)
                                          and comp.time_offsets == [0]):
        out, inp = weight(comp).shape
        return Unit(UnitKind.AFFINE, node.component, node.name, (node.component,), min(out, inp),
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
    return Unit(UnitKind.BOTTLENECK, node.component, node.name, names, mid, params, per_rank, fixed,
                consumers=tuple(r.name for r in readers),
                batchnorm=bn_node.name if bn_node else None, out_dim=out_dim,
                has_bias=all(len(bias(comp_of[r.name])) for r in readers))


# ---------------------------------------------------------------------------
# The matrix each unit holds.

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
    if unit.is_bottleneck:
        return consumer_blocks(nnet, unit)[0]
    return weight(nnet.components[unit.name])
