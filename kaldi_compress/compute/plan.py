"""What one chunk computes: nnet3's computation graph, for one chunk geometry.

A chunk supplies the 'input' node at a contiguous range of frames and the
'ivector' node (if any) at t = 0 only, and asks for the 'output' node at
t = 0, s, 2s, ...  As Kaldi's ComputationGraphBuilder does, a :class:`Plan`

1. finds where each node is computable (:mod:`kaldi_compress.nnet3.computable`, the
   same fixpoint as the network's context): an input frame exists, every required
   dependency is computable; ``IfDefined(x)`` is always computable and reads zeros
   where x is not; ``Failover(a, b)`` reads a where a is computable, else b;
2. walks back from the requested outputs to the frames that are actually used;
3. compiles every node's input descriptor (what it reads: ``Descriptor.reads``) into
   gathers of rows of other nodes (row ``len(source)`` of a gather is a zero row);
4. orders the work: whole nodes in dependency order, and recurrent groups of
   nodes (e.g. ``IfDefined(Offset(r, -3))``) block by block through time.

Times here are chunk-relative, as in Kaldi (output frame 0 is t = 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import GraphError, KaldiCompressError
from ..nnet3.computable import Availability, node_rule
from ..nnet3.descriptors import Descriptor, Failover, IfDefined, Read, ReadPart
from .layers import Layer, rows_of


@dataclass(frozen=True)
class Geometry:
    """A chunk: 'input' at ``input_start`` .. ``input_start + num_inputs - 1``,
    outputs at 0, stride, ..., (num_outputs - 1) * stride, i-vector at t = 0 if given."""
    input_start: int
    num_inputs: int
    num_outputs: int
    output_stride: int
    ivector: bool

    @property
    def output_times(self) -> np.ndarray:
        return np.arange(self.num_outputs, dtype=np.int64) * self.output_stride


@dataclass
class GraphNode:
    """A node as the plan sees it (descriptor after test-time rewriting)."""
    name: str
    kind: str
    dim: int
    descriptor: Descriptor | None = None
    layer: Layer | None = None
    layer_id: int | None = None
    source: str | None = None              # dim-range-node input
    columns: tuple[int, int] | None = None  # dim-range-node column range


@dataclass
class Term:
    """scale * source[rows] (rows: a slice, or an index with len(source) = zero row)."""
    source: str
    rows: slice | torch.Tensor
    scale: float = 1.0
    columns: tuple[int, int] | None = None


@dataclass
class Part:
    """One Append part: the sum of its terms plus an optional constant (T, dim)."""
    dim: int
    terms: list[Term]
    const: torch.Tensor | None = None


@dataclass
class Step:
    """Evaluate ``parts`` (concatenated), apply layer ``layer_id`` (if any) and
    store the result as node ``node`` (whole, or into ``rows`` of its buffer)."""
    node: str
    parts: list[Part]
    layer_id: int | None = None
    index: object = None
    rows: torch.Tensor | None = None


@dataclass
class Plan:
    input_rows: torch.Tensor                  # chunk feature rows for the 'input' times used
    uses_ivector: bool
    buffers: dict[str, tuple[int, int]]       # recurrent nodes: (num times, dim), filled in place
    steps: list[Step]
    free_after: list[list[str]] = field(default_factory=list)
    output: str = "output"
    times: dict[str, np.ndarray] = field(default_factory=dict)   # of each whole-node step
    uses_input: bool = True

    def starting_from(self, given: frozenset[str]) -> "Plan":
        """This plan when the values of the nodes ``given`` (at their ``times``) are
        supplied: their steps, and the steps only they depended on, are dropped."""
        needed, steps = {self.output}, []
        for step in reversed(self.steps):
            if step.node in needed and step.node not in given:
                steps.append(step)
                needed.update(t.source for p in step.parts for t in p.terms)
        steps.reverse()
        plan = Plan(self.input_rows, self.uses_ivector and "ivector" in needed,
                    {n: b for n, b in self.buffers.items() if n in needed}, steps,
                    output=self.output, times=self.times, uses_input="input" in needed)
        plan.free_after = _free_lists(steps, self.output)
        return plan


class Graph:
    """The network as evaluated at test time: nodes in order, their layers and dims."""

    def __init__(self, nodes: list[GraphNode], output: str, modulus: int, in_order: bool):
        """``in_order``: every node reads only earlier nodes (``Nnet.in_order``), so one
        pass in node order settles a plan's analyses."""
        self.nodes = nodes
        self.by_name = {n.name: n for n in nodes}
        self.output = output
        if output not in self.by_name or self.by_name[output].kind != "output-node":
            raise KaldiCompressError(f"the network has no output node named {output!r}")
        margin = modulus
        for n in nodes:
            if n.descriptor is not None:
                margin += n.descriptor.reach()
            if n.layer is not None:
                margin += _layer_reach(n.layer)
        self.margin = margin
        self.in_order = in_order

    def dim(self, name: str) -> int:
        return self.by_name[name].dim

    @property
    def fixed_window(self) -> bool:
        """True when every node at t reads fixed, required frames of its sources: no
        IfDefined/Failover, every layer ``fixed_window``.  An output frame's value then
        depends only on the input frames within the network's context of it, not on
        the chunk around it."""
        def plain(desc: Descriptor) -> bool:
            return (not isinstance(desc, (IfDefined, Failover))
                    and all(plain(c) for c in desc.children()))
        return all((n.layer is None or n.layer.fixed_window)
                   and (n.descriptor is None or plain(n.descriptor)) for n in self.nodes)


def _layer_reach(layer: Layer) -> int:
    probe = np.zeros(1, dtype=np.int64)
    times = layer.input_times(probe, lambda t: np.ones(t.shape, dtype=bool))
    return int(np.abs(times).max()) if len(times) else 0


class PlanBuilder:
    """Builds the :class:`Plan` of one geometry (see the module docstring)."""

    def __init__(self, graph: Graph, geometry: Geometry):
        self.g = graph
        self.geom = geometry
        out_t = geometry.output_times
        lo = min(geometry.input_start, 0, int(out_t[0])) - graph.margin
        hi = max(geometry.input_start + geometry.num_inputs, int(out_t[-1]) + 1) + graph.margin
        self.lo, self.n = lo, hi - lo
        self.window = np.arange(lo, hi, dtype=np.int64)
        self.available: Availability | None = None   # set by _computability
        self.needed: dict[str, np.ndarray] = {}
        self.times: dict[str, np.ndarray] = {}
        self._inputs_memo: dict[tuple[str, bytes], tuple[np.ndarray, list[ReadPart]]] = {}
        self._buffered: set[str] = set()      # recurrent nodes, filled block by block

    # --- 1. computability (:mod:`kaldi_compress.nnet3.computable`) ---------------------
    def _computability(self) -> None:
        g, geom = self.g, self.geom
        avail = self.available = Availability([n.name for n in g.nodes], self.lo, self.n)
        if "input" in avail.rows:
            avail.provide("input", geom.input_start, geom.input_start + geom.num_inputs)
        if geom.ivector and "ivector" in avail.rows:
            avail.provide("ivector", 0, 1)
        inner = [n for n in g.nodes if n.kind in ("component-node", "dim-range-node")]
        rules = [(n.name, node_rule(n.kind, n.descriptor, n.layer.comp if n.layer else None,
                                    n.source, avail)) for n in inner]
        if not avail.settle(rules, 1 if g.in_order else len(inner) + self.n + 2) \
                and not g.in_order:
            raise GraphError("computability of the network did not converge")

    def _desc_avail(self, desc: Descriptor):
        return lambda t: desc.computable(t, self.available)

    # --- 2. frames used ----------------------------------------------------------------------
    def _expand(self, desc: Descriptor, t: np.ndarray, present: np.ndarray) -> list[ReadPart]:
        """The descriptor at times t as Append parts of reads (:meth:`Descriptor.reads`)."""
        return desc.reads(t, present, self.available, self.g.dim)

    def _component_inputs(self, node: GraphNode, t: np.ndarray) -> tuple[np.ndarray, list[ReadPart]]:
        """The input times of a component node's output times t, and its descriptor
        expanded there (memoized: the caller must not modify the result)."""
        key = (node.name, t.tobytes())
        hit = self._inputs_memo.get(key)
        if hit is None:
            t_in = node.layer.input_times(t, self._desc_avail(node.descriptor))
            hit = (t_in, self._expand(node.descriptor, t_in, np.ones(t_in.shape, dtype=bool)))
            self._inputs_memo[key] = hit
        return hit

    def _mark(self, parts: list[ReadPart]) -> bool:
        changed = False
        for p in parts:
            for term in p.terms:
                idx = term.times[term.present] - self.lo
                row = self.needed[term.source]
                if not row[idx].all():
                    row[idx] = True
                    changed = True
        return changed

    def _needed(self) -> None:
        g = self.g
        for node in g.nodes:
            self.needed[node.name] = np.zeros(self.n, dtype=bool)
        out = g.by_name[g.output]
        t_out = self.geom.output_times
        if not out.descriptor.computable(t_out, self.available).all():
            raise KaldiCompressError(
                f"output {g.output!r} is not computable at every requested frame of the "
                "chunk (does the network need more context or an i-vector?)")
        self._mark(self._expand(out.descriptor, t_out, np.ones(t_out.shape, dtype=bool)))
        inner = [n for n in reversed(g.nodes) if n.kind in ("component-node", "dim-range-node")]
        for _ in range(len(inner) + self.n + 2):
            changed = False
            for node in inner:
                need = self.needed[node.name]
                if not need.any():
                    continue
                if node.kind == "dim-range-node":
                    src = self.needed[node.source]
                    changed |= bool((need & ~src).any())
                    src |= need
                else:
                    changed |= self._mark(self._component_inputs(node, self.window[need])[1])
            if not changed or g.in_order:
                break
        else:
            raise GraphError("the frames needed by the network did not converge")
        for name, row in self.needed.items():
            if row.any():
                self.times[name] = self.window[row]

    # --- 3. compilation ---------------------------------------------------------------------
    def _term(self, spec: Read) -> Term:
        """A gather of rows of the source (a slice view where possible, except from
        buffers filled in place, whose views autograd would see change)."""
        src_times = self.times[spec.source]
        rows = rows_of(src_times, spec.times)
        rows[~spec.present] = -1
        if spec.source not in self._buffered and len(rows) and (rows >= 0).all() and np.array_equal(
                rows, np.arange(rows[0], rows[0] + len(rows))):
            return Term(spec.source, slice(int(rows[0]), int(rows[0]) + len(rows)), spec.scale)
        if ((rows < 0) & spec.present).any():
            raise GraphError(f"internal error: frames of {spec.source} used but not computed")
        return Term(spec.source, torch.as_tensor(np.where(rows < 0, len(src_times), rows)),
                    spec.scale)

    def _part(self, spec: ReadPart, num_times: int) -> Part:
        const = None
        if spec.consts:
            c = np.zeros((num_times, spec.dim), dtype=np.float32)
            for value, mask in spec.consts:
                c[mask] += np.float32(value)
            const = torch.as_tensor(c)
        return Part(spec.dim, [self._term(t) for t in spec.terms], const)

    def _component_step(self, node: GraphNode, t: np.ndarray,
                        rows: torch.Tensor | None = None) -> Step:
        t_in, parts = self._component_inputs(node, t)
        index = node.layer.index(t, t_in, self._desc_avail(node.descriptor))
        return Step(node.name, [self._part(p, len(t_in)) for p in parts], node.layer_id,
                    index, rows)

    def _dim_range_step(self, node: GraphNode, t: np.ndarray,
                        rows: torch.Tensor | None = None) -> Step:
        term = self._term(Read(node.source, t, np.ones(t.shape, dtype=bool), 1.0))
        term.columns = node.columns
        return Step(node.name, [Part(node.dim, [term])], rows=rows)

    def _node_step(self, node: GraphNode, t: np.ndarray, rows=None) -> Step:
        if node.kind == "dim-range-node":
            return self._dim_range_step(node, t, rows)
        return self._component_step(node, t, rows)

    # --- 4. schedule -----------------------------------------------------------------------------
    def _dependencies(self, node: GraphNode) -> dict[str, np.ndarray]:
        """Source node -> (consumer time - source time) for every used reference."""
        t = self.times[node.name]
        if node.kind == "dim-range-node":
            return {node.source: np.zeros(len(t), dtype=np.int64)}
        t_in, parts = self._component_inputs(node, t)
        lags: dict[str, list[np.ndarray]] = {}
        for p in parts:
            for term in p.terms:
                lags.setdefault(term.source, []).append((t_in - term.times)[term.present])
        return {k: np.concatenate(v) for k, v in lags.items()}

    def _sccs(self, names: list[str], deps: dict[str, dict[str, np.ndarray]]) -> list[list[str]]:
        """Strongly connected components in dependency order (Tarjan, iterative)."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        on_stack: set[str] = set()
        stack: list[str] = []
        out: list[list[str]] = []
        order = {n: i for i, n in enumerate(names)}
        for root in names:
            if root in index:
                continue
            work = [(root, iter(sorted(deps[root], key=order.get)))]
            index[root] = low[root] = len(index)
            stack.append(root)
            on_stack.add(root)
            while work:
                v, it = work[-1]
                for w in it:
                    if w not in index:
                        index[w] = low[w] = len(index)
                        stack.append(w)
                        on_stack.add(w)
                        work.append((w, iter(sorted(deps[w], key=order.get))))
                        break
                    if w in on_stack:
                        low[v] = min(low[v], index[w])
                else:
                    work.pop()
                    if work:
                        low[work[-1][0]] = min(low[work[-1][0]], low[v])
                    if low[v] == index[v]:
                        comp = []
                        while True:
                            w = stack.pop()
                            on_stack.discard(w)
                            comp.append(w)
                            if w == v:
                                break
                        out.append(sorted(comp, key=order.get))
        return out

    def _recurrent_steps(self, group: list[str], deps) -> tuple[list[Step], dict]:
        """Steps for a recurrent group: blocks of L frames (L = the smallest positive
        time lag inside the group), members ordered by their same-frame dependencies."""
        g = self.g
        members = set(group)
        lag_min, same_frame = None, {n: set() for n in group}
        for name in group:
            node = g.by_name[name]
            if node.kind == "component-node" and not node.layer.time_simple:
                raise KaldiCompressError(f"recurrence through {node.layer.comp.type} "
                                         f"({name}) is not supported")
            for src, lags in deps[name].items():
                if src not in members or not len(lags):
                    continue
                if (lags < 0).any():
                    raise GraphError(f"node {name} depends on a later frame of {src} "
                                     "inside a recurrence")
                if (lags == 0).any():
                    same_frame[name].add(src)
                pos = lags[lags > 0]
                if len(pos):
                    lag_min = int(pos.min()) if lag_min is None else min(lag_min, int(pos.min()))
        order: list[str] = []
        pending = list(group)
        while pending:
            ready = [n for n in pending if same_frame[n] <= set(order)]
            if not ready:
                raise GraphError(f"nodes {', '.join(pending)} depend on each other at the "
                                 "same frame")
            order.append(ready[0])
            pending.remove(ready[0])
        all_times = np.unique(np.concatenate([self.times[n] for n in group]))
        block = lag_min or (int(all_times[-1] - all_times[0]) + 1)
        steps = []
        start = int(all_times[0])
        while start <= all_times[-1]:
            for name in order:
                t = self.times[name]
                sel = (t >= start) & (t < start + block)
                if sel.any():
                    rows = torch.as_tensor(np.nonzero(sel)[0])
                    steps.append(self._node_step(g.by_name[name], t[sel], rows))
            later = all_times[all_times >= start + block]
            if not len(later):
                break
            start = int(later[0])
        buffers = {n: (len(self.times[n]), g.dim(n)) for n in group}
        return steps, buffers

    def build(self) -> Plan:
        self._computability()
        self._needed()
        g = self.g
        names = [n.name for n in g.nodes
                 if n.name in self.times and n.kind in ("component-node", "dim-range-node")]
        deps = {n: self._dependencies(g.by_name[n]) for n in names}
        graph_deps = {n: {s: v for s, v in d.items() if s in deps} for n, d in deps.items()}
        steps: list[Step] = []
        buffers: dict[str, tuple[int, int]] = {}
        groups = self._sccs(names, graph_deps)
        recurrent = [len(grp) > 1 or grp[0] in graph_deps[grp[0]] for grp in groups]
        self._buffered = {n for grp, rec in zip(groups, recurrent) if rec for n in grp}
        for group, rec in zip(groups, recurrent):
            if rec:
                more, bufs = self._recurrent_steps(group, graph_deps)
                steps += more
                buffers.update(bufs)
            else:
                steps.append(self._node_step(g.by_name[group[0]], self.times[group[0]]))
        out = g.by_name[g.output]
        t_out = self.geom.output_times
        parts = self._expand(out.descriptor, t_out, np.ones(t_out.shape, dtype=bool))
        steps.append(Step(g.output, [self._part(p, len(t_out)) for p in parts]))
        input_times = self.times.get("input", np.zeros(0, dtype=np.int64))
        plan = Plan(torch.as_tensor(input_times - self.geom.input_start),
                    "ivector" in self.times, buffers, steps, output=g.output,
                    times={n: self.times[n] for n in names if n not in buffers},
                    uses_input="input" in self.times)
        plan.free_after = _free_lists(steps, g.output)
        return plan


def _free_lists(steps: list[Step], keep: str) -> list[list[str]]:
    """For each step, the node values no later step reads or writes."""
    last: dict[str, int] = {}
    for i, s in enumerate(steps):
        last[s.node] = i
        for p in s.parts:
            for term in p.terms:
                last[term.source] = i
    out: list[list[str]] = [[] for _ in steps]
    for name, i in last.items():
        if name != keep:
            out[i].append(name)
    return out
