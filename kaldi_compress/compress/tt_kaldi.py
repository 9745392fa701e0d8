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
the layer's bias goes into its own ``PerElementOffsetComponent`` (``FixedBiasComponent``
when the layer was not trainable), since a RepeatedAffine bias is shared by all blocks.
A TdnnComponent's time offsets become the descriptor ``Append(Offset(x, o_1), ...)``,
which is its spliced input, so the TT factorizes the spliced matrix.

Parameters as Kaldi counts them: each RepeatedAffine counts its block and its bias
(rows of the block), a PerElementOffset its offsets; Permute, dim-range and FixedBias
nothing.  Index conventions verified with Kaldi: /work/shared/docs/tt_in_kaldi.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import KaldiCompressError
from ..nnet3 import Nnet
from ..nnet3.components import (Component, FixedBiasComponent,
                                NaturalGradientRepeatedAffineComponent,
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


def _plan(shape: TTShape, ranks: tuple[int, ...], order: list[int]) -> tuple[list, int]:
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
    updatable: dict | None            # UpdatableComponent settings; None: not trainable
    natural_gradient: bool = True

    @property
    def padded_dim(self) -> int:
        last = [s for s in self.steps if s.kind == "core"][-1]
        return last.block.shape[0] * last.num_repeats

    @property
    def params(self) -> int:
        bias = len(self.bias) if self.bias is not None and self.updatable is not None else 0
        return chain_params(self.steps) + bias


def _core_component(step: ChainStep, layer: TTLayer) -> Component:
    cls = NaturalGradientRepeatedAffineComponent if layer.natural_gradient \
        else RepeatedAffineComponent
    return cls.create(step.block, np.zeros(step.block.shape[0]), step.num_repeats,
                      layer.updatable or {})


def write_layer(nnet: Nnet, node_name: str, layer: TTLayer, offsets: list[int]) -> list[str]:
    """Replace component node ``node_name`` by the TT chain; returns the new node names.

    New nodes ``N.tt1, N.tt2, ...`` (components ``C.tt1, ...``), then ``N.tt-trim``
    (a dim-range node, if rows were padded) and ``N.tt-bias``; every reference to N
    now reads the last of them, and C is removed if no other node uses it."""
    node = nnet.node(node_name)
    comp_name = node.component
    if layer.updatable is None and any(s.kind == "core" for s in layer.steps):
        raise KaldiCompressError(f"{comp_name}: a fixed (untrainable) layer cannot be written "
                                 "as RepeatedAffine components")
    names = [f"{node_name}.tt{s + 1}" for s in range(len(layer.steps))]
    comp_names = [f"{comp_name}.tt{s + 1}" for s in range(len(layer.steps))]
    extra = []
    if layer.padded_dim != layer.out_dim:
        extra.append(f"{node_name}.tt-trim")
    if layer.bias is not None:
        extra.append(f"{node_name}.tt-bias")
    for n in names + extra:
        if nnet.has_node(n) or n in nnet.components:
            raise KaldiCompressError(f"the network already has a node or component named {n}")
    new_nodes, prev = [], None
    for step, n, c in zip(layer.steps, names, comp_names):
        desc = spliced(node.descriptor, offsets) if prev is None else NodeRef(prev)
        new_nodes.append(Node("component-node", n, component=c, descriptor=desc))
        nnet.components[c] = PermuteComponent.create(step.column_map) \
            if step.kind == "permute" else _core_component(step, layer)
        prev = n
    if layer.padded_dim != layer.out_dim:
        trim = f"{node_name}.tt-trim"
        new_nodes.append(Node("dim-range-node", trim, dim=layer.out_dim, input_node=prev,
                              dim_offset=0))
        prev = trim
    if layer.bias is not None:
        c = f"{comp_name}.tt-bias"
        b = np.asarray(layer.bias, dtype=np.float32)
        nnet.components[c] = PerElementOffsetComponent.create(b, layer.updatable) \
            if layer.updatable is not None else FixedBiasComponent.build({"<Bias>": b})
        new_nodes.append(Node("component-node", f"{node_name}.tt-bias", component=c,
                              descriptor=NodeRef(prev)))
        prev = f"{node_name}.tt-bias"
    nnet.replace_nodes(node_name, new_nodes)
    nnet.rename_references({node_name: prev})
    if not any(n.kind == "component-node" and n.component == comp_name for n in nnet.nodes):
        del nnet.components[comp_name]
    nnet.check()
    return [n.name for n in new_nodes]
