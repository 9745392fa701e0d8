"""Network nodes and the config lines that declare them (nnet-nnet.cc ReadConfig).

Config lines, as Kaldi writes them::

    input-node name=N dim=D
    component-node name=N component=C input=<descriptor>
    output-node name=N input=<descriptor> objective=linear|quadratic
    dim-range-node name=N input-node=M dim-offset=O dim=D

A node remembers the exact line it was read from; a node built or edited here
is written in Kaldi's canonical form.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import GraphError
from .descriptors import Descriptor, is_valid_name, parse_descriptor, rename_nodes

NODE_TYPES = ("input-node", "component-node", "output-node", "dim-range-node")


def parse_config_line(line: str) -> tuple[str, dict[str, str]]:
    """Kaldi ConfigLine::ParseLine: first token, then key=value pairs whose
    values may contain spaces (a value ends at the space before the next ``key=``)."""
    s = line.strip()
    if not s:
        raise GraphError("empty config line")
    first, _, rest = s.partition(" ") if "=" not in s.split()[0] else ("", "", s)
    if first and not is_valid_name(first):
        raise GraphError(f"bad first token {first!r}")
    pairs: dict[str, str] = {}
    pos, n = 0, len(rest)
    while pos < n:
        if rest[pos].isspace():
            pos += 1
            continue
        eq = rest.find("=", pos)
        if eq <= pos:
            raise GraphError(f"expected key=value at {rest[pos:]!r}")
        key = rest[pos:eq]
        if not is_valid_name(key):
            raise GraphError(f"bad key {key!r}")
        if eq + 1 < n and rest[eq + 1] in "'\"":
            q = rest.find(rest[eq + 1], eq + 2)
            if q < 0:
                raise GraphError(f"no matching quote for {key}")
            value, pos = rest[eq + 2:q], q + 1
        else:
            end = n
            nxt = rest.find("=", eq + 1)
            if nxt >= 0:
                sp = max(rest.rfind(" ", 0, nxt), rest.rfind("\t", 0, nxt))
                if sp > eq:
                    end = sp
            value = rest[eq + 1:end].rstrip()
            pos = end
        if key in pairs:
            raise GraphError(f"key {key} given twice")
        pairs[key] = value
    return first, pairs


def _int(pairs: dict[str, str], key: str, kind: str) -> int:
    if key not in pairs:
        raise GraphError(f"{kind} needs {key}=")
    try:
        return int(pairs[key])
    except ValueError:
        raise GraphError(f"{kind}: {key}={pairs[key]!r} is not an integer") from None


@dataclass
class Node:
    """One network node.  ``text`` is the config line it was read from, if unedited."""
    kind: str
    name: str
    dim: int | None = None              # input-node, dim-range-node
    component: str | None = None        # component-node
    descriptor: Descriptor | None = None  # component-node, output-node
    input_node: str | None = None       # dim-range-node
    dim_offset: int | None = None       # dim-range-node
    objective: str = "linear"           # output-node
    text: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, line: str) -> "Node":
        kind, p = parse_config_line(line)
        if kind not in NODE_TYPES:
            raise GraphError(f"unknown node type {kind!r} (expected one of {', '.join(NODE_TYPES)})")
        name = p.get("name", "")
        if not is_valid_name(name):
            raise GraphError(f"{kind}: invalid or missing name= ({name!r})")
        allowed = {"input-node": {"name", "dim"},
                   "component-node": {"name", "component", "input"},
                   "output-node": {"name", "input", "objective", "dim"},
                   "dim-range-node": {"name", "input-node", "dim-offset", "dim"}}[kind]
        extra = set(p) - allowed
        if extra:
            raise GraphError(f"{kind} {name}: unexpected keys {sorted(extra)}")
        node = cls(kind, name, text=line)
        if kind == "input-node":
            node.dim = _int(p, "dim", kind)
            if node.dim <= 0:
                raise GraphError(f"input-node {name}: dim must be positive")
        elif kind == "component-node":
            if "component" not in p or "input" not in p:
                raise GraphError(f"component-node {name} needs component= and input=")
            node.component = p["component"]
            node.descriptor = parse_descriptor(p["input"])
        elif kind == "output-node":
            if "input" not in p:
                raise GraphError(f"output-node {name} needs input=")
            node.descriptor = parse_descriptor(p["input"])
            node.objective = p.get("objective", "linear")
            if node.objective not in ("linear", "quadratic"):
                raise GraphError(f"output-node {name}: objective must be linear or quadratic")
        else:
            node.input_node = p.get("input-node", "")
            if not is_valid_name(node.input_node):
                raise GraphError(f"dim-range-node {name}: bad input-node=")
            node.dim_offset = _int(p, "dim-offset", kind)
            node.dim = _int(p, "dim", kind)
            if node.dim_offset < 0 or node.dim <= 0:
                raise GraphError(f"dim-range-node {name}: bad dim-offset/dim")
        return node

    def inputs(self) -> list[str]:
        """Names of the nodes this node reads."""
        if self.descriptor is not None:
            return self.descriptor.node_names()
        if self.input_node is not None:
            return [self.input_node]
        return []

    def config_line(self, dims: dict[str, int | None] | None = None) -> str:
        """Kaldi's GetConfigLines form; with ``dims`` (include_dim) as nnet3-info prints."""
        if self.text is not None and dims is None:
            return self.text
        if self.kind == "input-node":
            return f"input-node name={self.name} dim={self.dim}"
        if self.kind == "component-node":
            line = f"component-node name={self.name} component={self.component} input={self.descriptor}"
            if dims is not None:
                line += f" input-dim={_d(dims.get('<in>' + self.name))} output-dim={_d(dims.get(self.name))}"
            return line
        if self.kind == "output-node":
            dim = f" dim={_d(dims.get(self.name))}" if dims is not None else ""
            return f"output-node name={self.name} input={self.descriptor}{dim} objective={self.objective}"
        return (f"dim-range-node name={self.name} input-node={self.input_node} "
                f"dim-offset={self.dim_offset} dim={self.dim}")

    def renamed_inputs(self, mapping: dict[str, str]) -> "Node":
        """A copy whose references to other nodes are renamed by ``mapping``."""
        new = Node(self.kind, self.name, self.dim, self.component, self.descriptor,
                   self.input_node, self.dim_offset, self.objective, None)
        if self.descriptor is not None:
            new.descriptor = rename_nodes(self.descriptor, mapping)
        if self.input_node is not None:
            new.input_node = mapping.get(self.input_node, self.input_node)
        if new.config_line() == self.config_line() and self.text is not None:
            new.text = self.text
        return new


def _d(v: int | None) -> str:
    return "?" if v is None else str(v)
