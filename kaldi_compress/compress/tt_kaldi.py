"""A TT-matrix layer written with Kaldi's own components (no dense matrix rebuilt).

y = W x with W a TT-matrix (see :mod:`.tt`) is evaluated core by core.  The state is
one vector per frame whose entries are indexed by a list of axes, row-major; it starts
as x, axes (j_1, ..., j_d).  Contracting core k against the state means summing over
j_k and the bond to the cores already contracted, producing i_k and the bond to the
cores still to come.  In Kaldi that is

1. a ``PermuteComponent`` (``out[p] = in[column_map[p]]``) moving the axes (j_k, bond_in)
   to the end, minor, the other axes in front in any order (left out when they are
   already there);
2. a ``(NaturalGradient)RepeatedAffineComponent`` whose NumRepeats contiguous blocks
   each hold one value of the other axes; its one block matrix, shared by all blocks,
   is exactly core k: B[(i_k, bond_out), (j_k, bond_in)] = G_k[...]; bias 0.

After the last core a final Permute puts the axes in the order (i_1, ..., i_d).
Cores are contracted right to left (j_d first) or left to right, whichever needs
fewer multiplications.  Rows padded to factor well are trimmed by a dim-range node;
the layer's bias goes into its own ``PerElementOffsetComponent``, since a RepeatedAffine
bias is shared by all blocks.
A TdnnComponent's time offsets become the descriptor ``Append(Offset(x, o_1), ...)``,
which is its spliced input, so the TT factorizes the spliced matrix.

Parameters as Kaldi counts them: each RepeatedAffine counts its block and its bias
(rows of the block), a PerElementOffset its offsets; Permute and dim-range nothing.  Index conventions verified with Kaldi: /work/shared/docs/tt_in_kaldi.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import KaldiCompressError
from ..nnet3 import Nnet
from ..nnet3.components import (Component, NaturalGradientRepeatedAffineComponent,
                                PerElementOffsetComponent, PermuteComponent,
                                RepeatedAffineComponent)
from ..nnet3.descriptors import (Append, Const, Descriptor, NodeRef, Offset, Scale, Sum)
from ..nnet3.graph import Node
from .tt import TTShape

Axis = tuple[str, int]   # ("i" | "j" | "r", k)


@dataclass
class ChainStep:
    """One component of the chain: a permutation or a core contraction."""
    kind: str                              # "permute" | "core"
    column_map: np.ndarray | None = None   # permute
    block: np.ndarray | None = None        # core: (rows, cols) block matrix
    num_repeats: int = 0                   # core
    core: int = -1                         # core: k (0-based)

    @property
    def params(self) -> int:
        """As Kaldi counts a RepeatedAffine: block + its bias (one per block row)."""
        return 0 if self.kind == "permute" else self.block.size + self.block.shape[0]


def _column_map(sizes: dict[Axis, int], have: list[Axis], want: list[Axis]) -> np.ndarray:
    """Permute map from the row-major layout ``have`` to ``want``: out[p] = in[map[p]]."""
    idx = np.arange(int(np.prod([sizes[a] for a in have]))).reshape([sizes[a] for a in have])
    return idx.transpose([have.index(a) for a in want]).reshape(-1).astype(np.int32)


def _plan(shape: TTShape, ranks: tuple[int, ...], order: list[int]
          ) -> tuple[list, int, dict[Axis, int]]:
    """(steps without matrices, multiplications per frame) contracting cores in ``order``."""
    d = shape.d
    sizes: dict[Axis, int] = {}
    for k in range(d):
        sizes[("i", k)], sizes[("j", k)] = shape.out_modes[k], shape.in_modes[k]
    for k in range(d + 1):
        sizes[("r", k)] = ranks[k]
    state: list[Axis] = [("j", k) for k in range(d)]
    plan, flops = [], 0
    done: set[int] = set()
    for k in order:
        left, right = ("r", k), ("r", k + 1)       # G_k is (r_k, m, n, r_{k+1}) 0-based
        bond_in = [b for b, nb in ((left, k - 1), (right, k + 1)) if nb in done]
        bond_out = [b for b, nb in ((left, k - 1), (right, k + 1))
                    if 0 <= nb < d and nb not in done]
        tail = [("j", k)] + bond_in
        others = [a for a in state if a not in tail]
        want = others + tail
        if want != state:
            plan.append(("permute", state, want))
        reps = int(np.prod([sizes[a] for a in others]))
        rows = sizes[("i", k)] * int(np.prod([sizes[b] for b in bond_out]))
        cols = int(np.prod([sizes[a] for a in tail]))
        plan.append(("core", k, reps, bond_in, bond_out))
        flops += reps * rows * cols
        state = others + [("i", k)] + bond_out
        done.add(k)
    final = [("i", k) for k in range(d)]
    if state != final:
        plan.append(("permute", state, final))
    return plan, flops, sizes


def chain_steps(cores: list[np.ndarray]) -> list[ChainStep]:
    """The Permute / RepeatedAffine sequence computing y = W x for TT cores G_k."""
    shape = TTShape(tuple(g.shape[1] for g in cores), tuple(g.shape[2] for g in cores))
    ranks = (1, *(g.shape[3] for g in cores))
    d = shape.d
    plans = [_plan(shape, ranks, order) for order in (list(range(d - 1, -1, -1)), list(range(d)))]
    plan, _, sizes = min(plans, key=lambda p: p[1])
    steps = []
    for item in plan:
        if item[0] == "permute":
            steps.append(ChainStep("permute", column_map=_column_map(sizes, item[1], item[2])))
            continue
        _, k, reps, bond_in, bond_out = item
        g = cores[k]                                   # axes (r_k, i, j, r_{k+1})
        axis_of = {("r", k): 0, ("r", k + 1): 3}
        row_axes = [1] + [axis_of[b] for b in bond_out]
        col_axes = [2] + [axis_of[b] for b in bond_in]
        drop = [a for a in (0, 3) if a not in row_axes + col_axes]   # size-1 boundary bonds
        block = g.transpose(row_axes + col_axes + drop)
        rows = int(np.prod([g.shape[a] for a in row_axes]))
        steps.append(ChainStep("core", block=block.reshape(rows, -1), num_repeats=reps, core=k))
    return steps


def chain_params(steps: list[ChainStep]) -> int:
    return sum(s.params for s in steps)


def chain_params_for(shape: TTShape, ranks: tuple[int, ...]) -> int:
    """Kaldi-counted parameters of the chain (without the layer's bias), from ranks alone."""
    d = shape.d
    plans = [_plan(shape, ranks, order) for order in (list(range(d - 1, -1, -1)), list(range(d)))]
    plan, _, sizes = min(plans, key=lambda p: p[1])
    total = 0
    for item in plan:
        if item[0] == "core":
            _, k, _, bond_in, bond_out = item
            rows = sizes[("i", k)] * int(np.prod([sizes[b] for b in bond_out]))
            cols = sizes[("j", k)] * int(np.prod([sizes[b] for b in bond_in]))
            total += rows * cols + rows
    return total


def apply_steps(steps: list[ChainStep], x: np.ndarray) -> np.ndarray:
    """Evaluate the chain on rows of ``x`` (frames x N), as Kaldi would (float64 here)."""
    for s in steps:
        if s.kind == "permute":
            x = x[:, s.column_map]
        else:
            t = x.reshape(len(x), s.num_repeats, s.block.shape[1])
            x = (t @ s.block.T).reshape(len(x), -1)
    return x


# ---------------------------------------------------------------------------
# Writing the chain into a network.

def shift(desc: Descriptor, t: int) -> Descriptor:
    """``desc`` delayed by t frames, Offsets pushed down to the leaves (Kaldi's normal form)."""
    if t == 0:
        return desc
    if isinstance(desc, NodeRef):
        return Offset(desc, t)
    if isinstance(desc, Offset):
        return desc.src if desc.t + t == 0 and not desc.x else Offset(desc.src, desc.t + t, desc.x)
    if isinstance(desc, Sum):
        return Sum(tuple(shift(s, t) for s in desc.srcs))
    if isinstance(desc, Append):
        return Append(tuple(shift(s, t) for s in desc.srcs))
    if isinstance(desc, Scale):
        return Scale(desc.scale, shift(desc.src, t))
    if isinstance(desc, Const):
        return desc
    return Offset(desc, t)


def spliced(desc: Descriptor, offsets: list[int]) -> Descriptor:
    """The TdnnComponent's input: Append(Offset(desc, o_1), ..., Offset(desc, o_K))."""
    if offsets == [0]:
        return desc
    return Append(tuple(shift(desc, o) for o in offsets))


@dataclass
class TTLayer:
    """What replaces one affine-like node: chain, trimming, bias, and how it is trained."""
    steps: list[ChainStep]
    out_dim: int                      # rows of the original W (<= padded rows)
    bias: np.ndarray | None           # the layer's bias (None: no bias)
    updatable: dict                   # UpdatableComponent settings (learning rate, ...)
    natural_gradient: bool = True

    @property
    def padded_dim(self) -> int:
        last = [s for s in self.steps if s.kind == "core"][-1]
        return last.block.shape[0] * last.num_repeats

    @property
    def params(self) -> int:
        return chain_params(self.steps) + (0 if self.bias is None else len(self.bias))


def _core_component(step: ChainStep, layer: TTLayer) -> Component:
    cls = NaturalGradientRepeatedAffineComponent if layer.natural_gradient \
        else RepeatedAffineComponent
    return cls.create(step.block, np.zeros(step.block.shape[0]), step.num_repeats,
                      layer.updatable)


def chain_nodes(nnet: Nnet, name: str, comp_name: str, descriptor: Descriptor,
                layer: TTLayer) -> list[Node]:
    """Add the chain's components to ``nnet`` and return its nodes, reading ``descriptor``:
    ``name.tt1, name.tt2, ...`` (components ``comp_name.tt1, ...``), then ``name.tt-trim``
    (a dim-range node, if rows were padded) and ``name.tt-bias``.  The caller places them."""
    names = [f"{name}.tt{s + 1}" for s in range(len(layer.steps))]
    comp_names = [f"{comp_name}.tt{s + 1}" for s in range(len(layer.steps))]
    trim = layer.padded_dim != layer.out_dim
    extra = ([f"{name}.tt-trim"] if trim else []) + \
        ([f"{name}.tt-bias"] if layer.bias is not None else [])
    for n in names + extra + comp_names:
        if nnet.has_node(n) or n in nnet.components:
            raise KaldiCompressError(f"the network already has a node or component named {n}")
    nodes, prev = [], None
    for step, n, c in zip(layer.steps, names, comp_names):
        nodes.append(Node("component-node", n, component=c,
                          descriptor=descriptor if prev is None else NodeRef(prev)))
        nnet.components[c] = PermuteComponent.create(step.column_map) \
            if step.kind == "permute" else _core_component(step, layer)
        prev = n
    if trim:
        nodes.append(Node("dim-range-node", f"{name}.tt-trim", dim=layer.out_dim,
                          input_node=prev, dim_offset=0))
        prev = f"{name}.tt-trim"
    if layer.bias is not None:
        c = f"{comp_name}.tt-bias"
        nnet.components[c] = PerElementOffsetComponent.create(
            np.asarray(layer.bias, dtype=np.float32), layer.updatable)
        nodes.append(Node("component-node", f"{name}.tt-bias", component=c,
                          descriptor=NodeRef(prev)))
    return nodes


def write_layer(nnet: Nnet, node_name: str, layer: TTLayer, offsets: list[int]) -> list[str]:
    """Replace component node ``node_name`` (input x) by the TT chain reading the spliced
    input Append(Offset(x, o_1), ...); every reference to it now reads the chain's last
    node, and its component is removed if no other node uses it.  Returns the new nodes."""
    node = nnet.node(node_name)
    nodes = chain_nodes(nnet, node_name, node.component,
                        spliced(node.descriptor, offsets), layer)
    nnet.replace_nodes(node_name, nodes)
    nnet.rename_references({node_name: nodes[-1].name})
    if not any(n.kind == "component-node" and n.component == node.component for n in nnet.nodes):
        del nnet.components[node.component]
    nnet.check()
    return [n.name for n in nodes]
