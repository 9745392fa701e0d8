"""The Kaldi nnet3 network: nodes (config lines) plus named components (nnet-nnet.cc).

On-disk form (binary and text alike)::

    <Nnet3> \\n
    <config line>\\n ...          one per node, in node order
    \\n                           (a blank line ends the config section)
    <NumComponents> N [\\n]
    <ComponentName> name <Type> ... </Type> [\\n]   (N times, in component order)
    </Nnet3>

(bracketed newlines are written in text mode only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..errors import GraphError, KaldiFormatError
from .components import Component, read_component
from .components.base import match_glob
from .computable import Availability, node_rule
from .graph import Node

MAX_COMPONENTS = 100000


@dataclass
class Context:
    left: int
    right: int


class Nnet:
    """Nodes in config order and components in component order (a dict keeps it)."""

    def __init__(self, nodes: list[Node], components: dict[str, Component]):
        self.nodes = nodes
        self.components = components

    # --- lookup ------------------------------------------------------------
    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name}")

    def has_node(self, name: str) -> bool:
        return any(n.name == name for n in self.nodes)

    def node_index(self, name: str) -> int:
        for i, n in enumerate(self.nodes):
            if n.name == name:
                return i
        raise KeyError(f"no node named {name}")

    def component_nodes(self) -> Iterable[tuple[Node, Component]]:
        for n in self.nodes:
            if n.kind == "component-node":
                yield n, self.components[n.component]

    def input_names(self) -> list[str]:
        return [n.name for n in self.nodes if n.kind == "input-node"]

    def output_names(self) -> list[str]:
        return [n.name for n in self.nodes if n.kind == "output-node"]

    def find_components(self, pattern: str) -> list[str]:
        return [c for c in self.components if match_glob(pattern, c)]

    def copy(self) -> "Nnet":
        """A structural copy: new node list and component objects (arrays shared)."""
        return Nnet(list(self.nodes), {k: c.copy() for k, c in self.components.items()})

    # --- serialisation -------------------------------------------------------
    @classmethod
    def read(cls, r) -> "Nnet":
        r.expect_token("<Nnet3>")
        start = r.pos
        rest = r.read_line("a newline after <Nnet3>")
        if rest not in (b"", b"\r"):
            raise r.error("a newline after <Nnet3>", repr(rest), at=start)
        lines: list[tuple[int, str]] = []
        while True:
            start = r.pos
            raw = r.read_line("a config line or the blank line ending the config section")
            if raw in (b"", b"\r"):
                break
            try:
                lines.append((start, raw.decode("utf-8")))
            except UnicodeDecodeError as e:
                raise r.error("a UTF-8 config line", f"invalid byte at {start + e.start}",
                              at=start + e.start) from None
            if len(lines) > 10 * MAX_COMPONENTS:
                raise r.error("at most a million config lines", at=start)
        r.expect_token("<NumComponents>")
        start = r.pos
        num = r.read_int("number of components")
        if not 0 <= num < MAX_COMPONENTS:
            raise r.error("a number of components in 0..99999", str(num), at=start)
        components: dict[str, Component] = {}
        for _ in range(num):
            r.expect_token("<ComponentName>")
            start = r.pos
            name = r.read_token("a component name")
            if name in components:
                raise r.error("a new component name", f"duplicate {name!r}", at=start)
            components[name] = read_component(r)
        r.expect_token("</Nnet3>")
        nodes = []
        for offset, line in lines:
            try:
                nodes.append(Node.parse(line.rstrip("\r")))
            except GraphError as e:
                raise KaldiFormatError(r.path, offset, "a valid config line", str(e)) from None
        nnet = cls(nodes, components)
        try:
            nnet.check()
        except GraphError as e:
            raise KaldiFormatError(r.path, lines[0][0] if lines else start,
                                   "a consistent network", str(e)) from None
        return nnet

    def write(self, w) -> None:
        w.write_token("<Nnet3>")
        w.raw(b"\n")
        for n in self.nodes:
            w.raw(n.config_line().encode("utf-8") + b"\n")
        w.raw(b"\n")
        w.write_token("<NumComponents>")
        w.write_int(len(self.components))
        w.newline()
        for name, comp in self.components.items():
            w.write_token("<ComponentName>")
            w.write_token(name)
            comp.write(w)
            w.newline()
        w.write_token("</Nnet3>")

    # --- structure ---------------------------------------------------------
    def node_dims(self) -> dict[str, int | None]:
        """Output dim of every node, plus ``'<in>' + name`` for component-node inputs."""
        dims: dict[str, int | None] = {}
        for n in self.nodes:
            if n.kind in ("input-node", "dim-range-node"):
                dims[n.name] = n.dim
            elif n.kind == "component-node":
                dims[n.name] = self.components[n.component].output_dim
        for n in self.nodes:
            if n.descriptor is not None:
                d = n.descriptor.dim(lambda name: dims.get(name))
                if n.kind == "output-node":
                    dims[n.name] = d
                else:
                    dims["<in>" + n.name] = d
        return dims

    def check(self) -> None:
        """Kaldi Nnet::Check: names, references and dimensions are consistent."""
        names: dict[str, Node] = {}
        for n in self.nodes:
            if n.name in names:
                raise GraphError(f"node {n.name} defined twice")
            names[n.name] = n
        for n in self.nodes:
            if n.kind == "component-node" and n.component not in self.components:
                raise GraphError(f"component-node {n.name}: no component named {n.component}")
            for ref in n.inputs():
                if ref not in names:
                    raise GraphError(f"node {n.name} refers to undefined node {ref}")
                if names[ref].kind == "output-node":
                    raise GraphError(f"node {n.name} refers to output node {ref}")
        dims = self.node_dims()
        for n in self.nodes:
            if n.kind == "component-node":
                want = self.components[n.component].input_dim
                got = dims.get("<in>" + n.name)
                if want is not None and got is not None and want != got:
                    raise GraphError(f"component-node {n.name}: input dimension {got} "
                                     f"but component {n.component} takes {want}")
            elif n.kind == "dim-range-node":
                src = dims.get(n.input_node)
                if src is not None and n.dim_offset + n.dim > src:
                    raise GraphError(f"dim-range-node {n.name}: range {n.dim_offset}+{n.dim} "
                                     f"exceeds dimension {src} of {n.input_node}")

    @property
    def num_parameters(self) -> int:
        """As nnet3-info: parameters of updatable components only."""
        return sum(c.num_parameters for c in self.components.values() if c.is_updatable)

    def modulus(self) -> int:
        m = 1
        for n in self.nodes:
            if n.descriptor is not None:
                m = int(np.lcm(m, n.descriptor.modulus()))
        return m

    def is_simple(self) -> bool:
        """Kaldi IsSimpleNnet: output 'output', input 'input' [and 'ivector']."""
        inputs = self.input_names()
        if "output" not in self.output_names() or "input" not in inputs:
            return False
        return len(inputs) == 1 or "ivector" in inputs

    def in_order(self) -> bool:
        """True when every node reads only nodes listed before it (no recurrence): one
        pass in node order then settles what is computable where."""
        seen: set[str] = set()
        for n in self.nodes:
            if any(i not in seen for i in n.inputs()):
                return False
            seen.add(n.name)
        return True

    def compute_context(self) -> Context | None:
        """Left/right context exactly as Kaldi's ComputeSimpleNnetContext, or None."""
        if not self.is_simple():
            return None
        modulus = self.modulus()
        ordered = self.in_order()
        window = 40
        while window < 800:
            found = []
            for start in range(modulus + 1):
                ctx = self._context_for_shift(start, window, modulus, ordered)
                if ctx is None:
                    break
                found.append(ctx)
            else:
                if found[0] != found[modulus]:
                    raise GraphError("network context depends on the time shift")
                return Context(max(c[0] for c in found), max(c[1] for c in found))
            window *= 2
        raise GraphError("cannot compute the network context (not a simple network?)")

    def _context_for_shift(self, start: int, window: int, modulus: int,
                           ordered: bool) -> tuple[int, int] | None:
        pad = window + modulus
        lo, hi = start - pad, start + window + pad
        avail = Availability([n.name for n in self.nodes], lo, hi - lo)
        avail.provide("input", start, start + window)
        if "ivector" in avail.rows and self.node("ivector").kind == "input-node":
            avail.provide("ivector", start - modulus, start + window)
        computed = [n for n in self.nodes if n.kind != "input-node"]
        rules = [(n.name, node_rule(n.kind, n.descriptor,
                                    self.components[n.component] if n.component else None,
                                    n.input_node, avail)) for n in computed]
        avail.settle(rules, 1 if ordered else len(computed) + window + 2)
        ok = avail.rows["output"][start - lo:start - lo + window]
        if not ok.any():
            return None
        first_ok = int(np.argmax(ok))
        rest = ok[first_ok:]
        first_not_ok = first_ok + (int(np.argmin(rest)) if not rest.all() else len(rest))
        return first_ok, window - first_not_ok

    # --- edits -----------------------------------------------------------------
    def remove_output_nodes(self, pattern: str) -> list[str]:
        """Kaldi edit ``remove-output-nodes name=<pattern>``."""
        removed = [n.name for n in self.nodes if n.kind == "output-node" and match_glob(pattern, n.name)]
        if len(removed) == len(self.output_names()):
            raise GraphError("all outputs would be removed")
        self.nodes = [n for n in self.nodes if n.name not in removed]
        return removed

    def consumers(self) -> dict[str, list[Node]]:
        """For every node, the nodes that read it (each once, in node order)."""
        users: dict[str, list[Node]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for ref in set(n.inputs()):
                users[ref].append(n)
        return users

    def remove_orphans(self) -> tuple[list[str], list[str]]:
        """Kaldi edit ``remove-orphans``: drop nodes no output depends on (inputs are
        kept) and components no node uses.  Returns (nodes, components) removed."""
        by_name = {n.name: n for n in self.nodes}
        needed: set[str] = set()
        stack = self.output_names()
        while stack:
            name = stack.pop()
            if name in needed:
                continue
            needed.add(name)
            stack.extend(by_name[name].inputs())
        removed_nodes = [n.name for n in self.nodes
                         if n.name not in needed and n.kind != "input-node"]
        self.nodes = [n for n in self.nodes if n.name in needed or n.kind == "input-node"]
        used = {n.component for n in self.nodes if n.kind == "component-node"}
        removed_comps = [c for c in self.components if c not in used]
        for c in removed_comps:
            del self.components[c]
        return removed_nodes, removed_comps

    def replace_nodes(self, name: str, new_nodes: list[Node]) -> None:
        """Put ``new_nodes`` where node ``name`` was."""
        i = self.node_index(name)
        self.nodes[i:i + 1] = new_nodes

    def rename_references(self, mapping: dict[str, str]) -> None:
        """Rewrite every reference to node ``a`` as a reference to ``mapping[a]``."""
        self.nodes = [n.renamed_inputs(mapping) for n in self.nodes]
