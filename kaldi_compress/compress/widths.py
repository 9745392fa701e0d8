"""Width spaces: sets of node outputs whose dimensions are the same hidden units.

Dimension j of a TDNN-F network's residual stream is row j of ``tdnn1.affine`` and
of every ``tdnnfN.affine``, passes through ReLU, BatchNorm and dropout dimension by
dimension, is added by ``Sum(Scale(0.66, tdnnf(N-1).noop), tdnfN.dropout)``, and is
read by column j (of every time offset) of each ``tdnnfN.linear``.  Removing the
hidden unit j removes it from all of them at once.  A :class:`Space` is such a set:

* **producers**: affine-like nodes whose output rows are the space's dimensions;
* **pass-through** nodes: per-dimension components (ReLU/sigmoid/tanh, BatchNorm and
  dropout with one block, NoOp) reading dim-local expressions of the space
  (``Sum``, ``Scale``, ``Offset``, ``IfDefined``, ... -- no ``Append`` or ``Const``);
* **consumers**: affine-like nodes reading the space in some of their input columns
  (an ``Append`` part of their descriptor; each time offset of a TdnnComponent).

Spaces are found by union-find: a pass-through node and everything it reads, and the
nodes of one consumer input part, are the same dimensions.  A space read by anything
else (an output node, a dim-range node, a Softmax, ...), fed by an input node or
a non-affine producer, is not prunable and is not returned.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..nnet3 import Nnet
from ..nnet3.components import (AffineComponent, BatchNormComponent, Component,
                                DropoutComponent, FixedAffineComponent,
                                GeneralDropoutComponent, LinearComponent, NoOpComponent,
                                RectifiedLinearComponent, SigmoidComponent, TanhComponent,
                                TdnnComponent)
from ..nnet3.descriptors import Append, Const, Descriptor
from .units import bias, counted, offsets, weight

AFFINE_LIKE = (AffineComponent, LinearComponent, FixedAffineComponent, TdnnComponent)
PER_DIM = (RectifiedLinearComponent, SigmoidComponent, TanhComponent, BatchNormComponent,
           DropoutComponent, GeneralDropoutComponent, NoOpComponent)


@dataclass(frozen=True)
class Consumer:
    """A node reading the space: in each block starting at column s (one per time
    offset and Append part), column s + j holds the space's dimension j."""
    node: str
    starts: tuple[int, ...]


@dataclass(frozen=True)
class Space:
    """Hidden units shared by the nodes of one width space (see the module docstring)."""
    name: str                          # the first producer's node
    dim: int
    producers: tuple[str, ...]
    passthrough: tuple[str, ...]
    consumers: tuple[Consumer, ...]
    params_before: int                 # counted parameters of every component it touches
    per_dim: int                       # counted parameters each kept dimension costs

    def params_at(self, width: int) -> int:
        return self.params_before - (self.dim - width) * self.per_dim

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(self.producers + self.passthrough + tuple(c.node for c in self.consumers))


def _per_dim_ok(comp: Component) -> bool:
    if not isinstance(comp, PER_DIM):
        return False
    return comp.get("<BlockDim>", comp["<Dim>"]) == comp["<Dim>"]


def _dim_local(desc: Descriptor) -> bool:
    """Whether dimension j of the value is made only of dimension j of its nodes."""
    if isinstance(desc, (Append, Const)):
        return False
    return all(_dim_local(c) for c in desc.children())


def _parts(desc: Descriptor) -> tuple[Descriptor, ...]:
    return desc.srcs if isinstance(desc, Append) else (desc,)


class _Union:
    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, names: list[str]) -> None:
        roots = [self.find(n) for n in names]
        for r in roots[1:]:
            self.parent[r] = roots[0]


def find_spaces(nnet: Nnet) -> list[Space]:
    """Every prunable width space, in the order of its first producer."""
    dims = nnet.node_dims()
    comp_of = {n.name: nnet.components[n.component] for n in nnet.nodes
               if n.kind == "component-node"}
    uses = {}
    for n in nnet.nodes:
        if n.kind == "component-node":
            uses[n.component] = uses.get(n.component, 0) + 1
    sets = _Union()
    frozen: set[str] = set()           # nodes whose space is not prunable
    reads: list[tuple[str, int, tuple[str, ...]]] = []   # (consumer, part start, nodes)
    for n in nnet.nodes:
        sets.find(n.name)
        if n.kind == "input-node":
            frozen.add(n.name)
            continue
        if n.kind != "component-node":          # output and dim-range nodes
            frozen.update(n.descriptor.node_names() if n.descriptor else [n.input_node])
            continue
        comp = comp_of[n.name]
        if uses[n.component] > 1:
            frozen.update([n.name, *n.descriptor.node_names()])
            continue
        if _per_dim_ok(comp) and _dim_local(n.descriptor):
            sets.union([n.name, *n.descriptor.node_names()])
        elif isinstance(comp, AFFINE_LIKE):
            start = 0
            for part in _parts(n.descriptor):
                names = part.node_names()
                if _dim_local(part) and names:
                    sets.union(names)
                    reads.append((n.name, start, tuple(names)))
                else:
                    frozen.update(names)
                start += part.dim(dims.get)
        else:
            frozen.update([n.name, *n.descriptor.node_names()])
    frozen_roots = {sets.find(x) for x in frozen}
    groups: dict[str, list[str]] = {}
    for n in nnet.nodes:
        groups.setdefault(sets.find(n.name), []).append(n.name)
    spaces = []
    for root, members in groups.items():
        if root in frozen_roots:
            continue
        producers = [m for m in members if isinstance(comp_of.get(m), AFFINE_LIKE)]
        passthrough = [m for m in members if m not in producers]
        if not producers or any(not _per_dim_ok(comp_of[m]) for m in passthrough):
            continue
        starts: dict[str, list[int]] = {}
        for node, start, names in reads:
            if sets.find(names[0]) == root:
                comp = comp_of[node]
                block = weight(comp).shape[1] // len(offsets(comp))
                starts.setdefault(node, []).extend(k * block + start
                                                   for k in range(len(offsets(comp))))
        consumers = [Consumer(node, tuple(sorted(s))) for node, s in starts.items()]
        spaces.append(_space(nnet, dims[producers[0]], producers, passthrough, consumers))
    return spaces


def _space(nnet: Nnet, dim: int, producers, passthrough, consumers) -> Space:
    comps = {name: nnet.components[nnet.node(name).component]
             for name in [*producers, *passthrough, *(c.node for c in consumers)]}
    per_dim = 0
    for p in producers:
        c = comps[p]
        if c.is_updatable:
            per_dim += weight(c).shape[1] + (1 if len(bias(c)) else 0)
    for p in passthrough:
        per_dim += counted(comps[p]) // dim
    for c in consumers:
        comp = comps[c.node]
        if comp.is_updatable:
            per_dim += weight(comp).shape[0] * len(c.starts)
    return Space(producers[0], dim, tuple(producers), tuple(passthrough), tuple(consumers),
                 sum(counted(c) for c in comps.values()), per_dim)
