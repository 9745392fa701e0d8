"""Finding the TT layers of a network and the cores inside their Kaldi chains.

A ``tt`` rewrite (:mod:`.tt_kaldi`) writes y = W x, W a TT-matrix with cores G_k of shape
(r_{k-1}, m_k, n_k, r_k), as a chain of ``PermuteComponent`` and ``RepeatedAffineComponent``
nodes, each core's entries held (permuted) in one RepeatedAffine block.  Kaldi's model
keeps no record of the shape, so it is recovered from the chain: for the chain's core
steps in order (cores d..1 or 1..d), a block of c columns and r rows holds n_k times the
incoming bonds and m_k times the outgoing one, so n_k follows from the bonds already known
and each split r = m_k r_k is tried (the NumRepeats of the next step rules out all but the
right one).  A candidate is accepted only if :func:`.tt_kaldi.chain_steps` writes exactly
this chain for it (same steps, permutations, block shapes and repeats); then writing cores
whose entries are their own flat indexes tells where each core entry sits in its block:
G_k = block.flat[gather_k].  Any accepted candidate is correct: the chain computes
tt_to_matrix of the cores so read, whatever shape produced it.

Candidates are maximal runs of component nodes, each reading only the one before (which
nothing else reads), of Permute and RepeatedAffine components used by no other node; a run
is cut into the longest pieces that a TT shape writes (two TT layers may be adjacent), and
what no TT shape writes is not a TT layer and is left out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..nnet3 import Nnet
from ..nnet3.components import PermuteComponent, RepeatedAffineComponent
from ..nnet3.descriptors import Descriptor, NodeRef
from .tt_kaldi import ChainStep, chain_steps

CHAIN_TYPES = (PermuteComponent, RepeatedAffineComponent)


@dataclass
class TTChain:
    """One TT layer as written in a network."""
    nodes: list[str]                      # the chain's component nodes, in order
    components: list[str]                 # their components
    descriptor: Descriptor                # what the first node reads
    core_shapes: list[tuple[int, ...]]    # (r_{k-1}, m_k, n_k, r_k) per core
    core_steps: list[int]                 # chain position of core k's RepeatedAffine
    gathers: list[np.ndarray] = field(repr=False)   # G_k = block_k.flat[gathers[k]]

    @property
    def in_dim(self) -> int:
        return int(np.prod([s[2] for s in self.core_shapes]))

    @property
    def out_dim(self) -> int:
        """Rows of the TT (padded rows included)."""
        return int(np.prod([s[1] for s in self.core_shapes]))

    def cores(self, nnet: Nnet) -> list[np.ndarray]:
        """The cores G_k, read from the chain's RepeatedAffine blocks in ``nnet``."""
        return [nnet.components[self.components[p]].linear_params.reshape(-1)[g].reshape(s)
                for p, g, s in zip(self.core_steps, self.gathers, self.core_shapes)]


def _steps_of(nnet: Nnet, comps: list[str]) -> list[ChainStep]:
    out = []
    for c in comps:
        comp = nnet.components[c]
        if isinstance(comp, PermuteComponent):
            out.append(ChainStep("permute", column_map=np.asarray(comp.column_map)))
        else:
            out.append(ChainStep("core", block=comp.linear_params, num_repeats=comp.num_repeats))
    return out


def _same(a: list[ChainStep], b: list[ChainStep]) -> bool:
    if [s.kind for s in a] != [s.kind for s in b]:
        return False
    for x, y in zip(a, b):
        if x.kind == "permute" and not np.array_equal(x.column_map, y.column_map):
            return False
        if x.kind == "core" and (x.block.shape != y.block.shape
                                 or x.num_repeats != y.num_repeats):
            return False
    return True


def _divisors(n: int) -> list[int]:
    return [f for f in range(1, n + 1) if n % f == 0]


def _candidates(cores: list[ChainStep], in_dim: int) -> list[list[tuple[int, ...]]]:
    """Core shapes consistent with the core steps' blocks and repeats, for both orders."""
    d = len(cores)
    out = []
    for rtl in (True, False):
        order = list(range(d - 1, -1, -1)) if rtl else list(range(d))

        def extend(s: int, m: dict, n: dict, r: dict) -> None:
            if s == d:
                out.append([(r[k], m[k], n[k], r[k + 1]) for k in range(d)])
                return
            k, step = order[s], cores[s]
            rows, cols = step.block.shape
            bond_in = r[k + 1] if rtl else r[k]
            if cols % bond_in:
                return
            n = {**n, k: cols // bond_in}
            done_n = int(np.prod(list(n.values())))
            if in_dim % done_n:
                return
            rest_n = in_dim // done_n                       # the n_l not yet contracted
            done_m = int(np.prod([m[l] for l in m]))        # the m_l already produced
            if step.num_repeats != rest_n * done_m:
                return
            last = s == d - 1
            for mk in ([rows] if last else _divisors(rows)):
                bond = rows // mk
                extend(s + 1, {**m, k: mk}, n, {**r, (k if rtl else k + 1): bond})

        extend(0, {}, {}, {d: 1} if rtl else {0: 1})
    return out


def recover(nnet: Nnet, nodes: list[str]) -> TTChain | None:
    """The TT layer that the chain of ``nodes`` computes, or None if no TT shape writes it."""
    comps = [nnet.node(n).component for n in nodes]
    steps = _steps_of(nnet, comps)
    core_pos = [i for i, s in enumerate(steps) if s.kind == "core"]
    if not core_pos:
        return None
    first = steps[0]
    in_dim = len(first.column_map) if first.kind == "permute" \
        else first.block.shape[1] * first.num_repeats
    for shapes in _candidates([steps[i] for i in core_pos], in_dim):
        index_cores = [np.arange(int(np.prod(s))).reshape(s) for s in shapes]
        written = chain_steps(index_cores)
        if not _same(written, steps):
            continue
        order = [s.core for s in written if s.kind == "core"]
        gathers = [None] * len(shapes)
        for pos, k in zip(core_pos, order):
            gathers[k] = np.argsort(written[pos].block.reshape(-1), kind="stable")
        step_of = [core_pos[order.index(k)] for k in range(len(shapes))]
        return TTChain(nodes, comps, nnet.node(nodes[0]).descriptor, shapes, step_of, gathers)
    return None


def find_chains(nnet: Nnet) -> list[TTChain]:
    """Every TT layer of ``nnet`` (see the module docstring)."""
    readers = nnet.consumers()
    uses: dict[str, int] = {}
    for n, _ in nnet.component_nodes():
        uses[n.component] = uses.get(n.component, 0) + 1
    by_name = {n.name: n for n in nnet.nodes}

    def link(n) -> bool:
        return (n.kind == "component-node" and uses[n.component] == 1
                and isinstance(nnet.components[n.component], CHAIN_TYPES))

    chains, taken = [], set()
    for n in nnet.nodes:
        if n.name in taken or not link(n):
            continue
        if isinstance(n.descriptor, NodeRef) and link(by_name[n.descriptor.name]) \
                and len(readers[n.descriptor.name]) == 1:
            continue            # not the start of a chain
        run = [n.name]
        while len(readers[run[-1]]) == 1:
            nxt = readers[run[-1]][0]
            if not (link(nxt) and isinstance(nxt.descriptor, NodeRef)
                    and nxt.descriptor.name == run[-1]):
                break
            run.append(nxt.name)
        taken.update(run)
        chains.extend(_split(nnet, run))
    return chains


def _split(nnet: Nnet, run: list[str]) -> list[TTChain]:
    """The TT layers in a run of chain nodes, longest first from its start (two TT layers
    can follow each other directly, e.g. a bias-free TT read by another)."""
    out, start = [], 0
    while start < len(run):
        for end in range(len(run), start, -1):
            chain = recover(nnet, run[start:end])
            if chain is not None:
                out.append(chain)
                start = end
                break
        else:
            start += 1
    return out
