"""Kaldi nnet3 descriptors: the ``input=...`` expressions of config lines.

Grammar (nnet-descriptor.cc), written back in Kaldi's canonical form with ``", "``
separators::

    D := name | Append(D, ...) | Sum(D, ...) | Failover(D, D) | IfDefined(D)
       | Offset(D, t[, x]) | Switch(D, ...) | Round(D, m) | ReplaceIndex(D, t|x, v)
       | Scale(s, D) | Const(value, dim)

Everything a descriptor means in time lives here: for an array of times t, where
it is computable (``computable``), which rows of which nodes it reads with what
scale, and which constants (``reads``, as Append parts), how far in time it can
reach (``reach``), its dimension and its time modulus.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import GraphError

Avail = Callable[[str, np.ndarray], np.ndarray]
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-.]*\Z")
_TOKEN = re.compile(r"\s*([(),]|[^\s(),]+)")


def is_valid_name(name: str) -> bool:
    """Kaldi IsValidName: a letter or _, then letters, digits, _ - ."""
    return bool(_NAME.match(name))


def format_float(x: float) -> str:
    """Kaldi's default stream precision (6 significant digits, %g)."""
    return "%g" % x


@dataclass
class Read:
    """Rows of node ``source`` at ``times``, times ``scale``; zero where not ``present``."""
    source: str
    times: np.ndarray
    present: np.ndarray
    scale: float


@dataclass
class ReadPart:
    """One Append part of a descriptor's value: the sum of its reads and constants
    (``(value, present)`` pairs)."""
    dim: int
    terms: list[Read]
    consts: list[tuple[float, np.ndarray]]


def merge_parts(a: list[ReadPart], b: list[ReadPart], what: "Descriptor") -> list[ReadPart]:
    """Index-wise union of two part lists with the same Append structure."""
    if [p.dim for p in a] != [p.dim for p in b]:
        raise GraphError(f"unsupported descriptor {what}: its arguments have different "
                         "Append structures")
    return [ReadPart(x.dim, x.terms + y.terms, x.consts + y.consts) for x, y in zip(a, b)]


class Descriptor:
    """Base class of descriptor expression nodes."""

    def children(self) -> tuple["Descriptor", ...]:
        return ()

    def node_names(self) -> list[str]:
        out: list[str] = []
        for c in self.children():
            out.extend(c.node_names())
        return out

    def modulus(self) -> int:
        m = 1
        for c in self.children():
            m = np.lcm(m, c.modulus())
        return int(m)

    def dim(self, node_dim: Callable[[str], int | None]) -> int | None:
        dims = [c.dim(node_dim) for c in self.children()]
        if any(d is None for d in dims):
            return None
        if len(set(dims)) != 1:
            raise GraphError(f"mismatched dimensions {dims} in {self}")
        return dims[0]

    def computable(self, t: np.ndarray, avail: Avail) -> np.ndarray:
        raise NotImplementedError

    def reads(self, t: np.ndarray, present: np.ndarray, avail: Avail,
              node_dim: Callable[[str], int]) -> list[ReadPart]:
        """The value at times t as Append parts of reads; a read is absent (zero) where
        ``present`` is false (``avail`` says where nodes are computable)."""
        raise GraphError(f"unsupported descriptor {self}")

    def reach(self) -> int:
        """A bound on |t_source - t| over the node references (for ReplaceIndex, on
        |t_source|: those lie near t = 0)."""
        return max([c.reach() for c in self.children()], default=0)

    def map(self, fn: Callable[["Descriptor"], "Descriptor"]) -> "Descriptor":
        """Rebuild bottom-up, applying ``fn`` to every node."""
        return fn(self)


@dataclass(frozen=True)
class NodeRef(Descriptor):
    name: str

    def node_names(self) -> list[str]:
        return [self.name]

    def dim(self, node_dim):
        return node_dim(self.name)

    def computable(self, t, avail):
        return avail(self.name, t)

    def reads(self, t, present, avail, node_dim):
        return [ReadPart(node_dim(self.name), [Read(self.name, t, present, 1.0)], [])]

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Offset(Descriptor):
    src: Descriptor
    t: int
    x: int = 0

    def children(self):
        return (self.src,)

    def computable(self, t, avail):
        return self.src.computable(t + self.t, avail)

    def map(self, fn):
        return fn(Offset(self.src.map(fn), self.t, self.x))

    def reads(self, t, present, avail, node_dim):
        if self.x != 0:
            raise GraphError(f"descriptor {self}: x offsets are not supported")
        return self.src.reads(t + self.t, present, avail, node_dim)

    def reach(self) -> int:
        return abs(self.t) + self.src.reach()

    def __str__(self) -> str:
        return f"Offset({self.src}, {self.t}" + (f", {self.x})" if self.x else ")")


@dataclass(frozen=True)
class Round(Descriptor):
    src: Descriptor
    t_modulus: int

    def children(self):
        return (self.src,)

    def modulus(self) -> int:
        return int(np.lcm(self.t_modulus, self.src.modulus()))

    def computable(self, t, avail):
        return self.src.computable((t // self.t_modulus) * self.t_modulus, avail)

    def map(self, fn):
        return fn(Round(self.src.map(fn), self.t_modulus))

    def reads(self, t, present, avail, node_dim):
        return self.src.reads((t // self.t_modulus) * self.t_modulus, present, avail, node_dim)

    def reach(self) -> int:
        return self.t_modulus + self.src.reach()

    def __str__(self) -> str:
        return f"Round({self.src}, {self.t_modulus})"


@dataclass(frozen=True)
class ReplaceIndex(Descriptor):
    src: Descriptor
    variable: str  # "t" or "x"
    value: int

    def children(self):
        return (self.src,)

    def computable(self, t, avail):
        if self.variable == "t":
            return self.src.computable(np.full_like(t, self.value), avail)
        return self.src.computable(t, avail)

    def map(self, fn):
        return fn(ReplaceIndex(self.src.map(fn), self.variable, self.value))

    def reads(self, t, present, avail, node_dim):
        if self.variable == "x":
            if self.value != 0:
                raise GraphError(f"descriptor {self}: x indexes are not supported")
            return self.src.reads(t, present, avail, node_dim)
        return self.src.reads(np.full_like(t, self.value), present, avail, node_dim)

    def reach(self) -> int:
        return (abs(self.value) if self.variable == "t" else 0) + self.src.reach()

    def __str__(self) -> str:
        return f"ReplaceIndex({self.src}, {self.variable}, {self.value})"


@dataclass(frozen=True)
class Switch(Descriptor):
    srcs: tuple[Descriptor, ...]

    def children(self):
        return self.srcs

    def modulus(self) -> int:
        return int(np.lcm(len(self.srcs), super().modulus()))

    def computable(self, t, avail):
        out = np.zeros(t.shape, dtype=bool)
        which = t % len(self.srcs)
        for i, s in enumerate(self.srcs):
            sel = which == i
            if sel.any():
                out[sel] = s.computable(t[sel], avail)
        return out

    def map(self, fn):
        return fn(Switch(tuple(s.map(fn) for s in self.srcs)))

    def reads(self, t, present, avail, node_dim):
        which = t % len(self.srcs)
        parts = None
        for i, src in enumerate(self.srcs):
            branch = src.reads(t, present & (which == i), avail, node_dim)
            parts = branch if parts is None else merge_parts(parts, branch, self)
        return parts

    def __str__(self) -> str:
        return "Switch(" + ", ".join(map(str, self.srcs)) + ")"


@dataclass(frozen=True)
class Scale(Descriptor):
    scale: float
    src: Descriptor

    def children(self):
        return (self.src,)

    def computable(self, t, avail):
        return self.src.computable(t, avail)

    def map(self, fn):
        return fn(Scale(self.scale, self.src.map(fn)))

    def reads(self, t, present, avail, node_dim):
        parts = self.src.reads(t, present, avail, node_dim)
        for p in parts:
            for term in p.terms:
                term.scale *= self.scale
            p.consts = [(v * self.scale, m) for v, m in p.consts]
        return parts

    def __str__(self) -> str:
        return f"Scale({format_float(self.scale)}, {self.src})"


@dataclass(frozen=True)
class Const(Descriptor):
    value: float
    const_dim: int

    def dim(self, node_dim):
        return self.const_dim

    def computable(self, t, avail):
        return np.ones(t.shape, dtype=bool)

    def reads(self, t, present, avail, node_dim):
        return [ReadPart(self.const_dim, [], [(self.value, present)])]

    def __str__(self) -> str:
        return f"Const({format_float(self.value)}, {self.const_dim})"


@dataclass(frozen=True)
class IfDefined(Descriptor):
    src: Descriptor

    def children(self):
        return (self.src,)

    def computable(self, t, avail):
        return np.ones(t.shape, dtype=bool)  # zero where the source is missing

    def map(self, fn):
        return fn(IfDefined(self.src.map(fn)))

    def reads(self, t, present, avail, node_dim):
        return self.src.reads(t, present & self.src.computable(t, avail), avail, node_dim)

    def __str__(self) -> str:
        return f"IfDefined({self.src})"


@dataclass(frozen=True)
class Failover(Descriptor):
    first: Descriptor
    second: Descriptor

    def children(self):
        return (self.first, self.second)

    def computable(self, t, avail):
        return self.first.computable(t, avail) | self.second.computable(t, avail)

    def map(self, fn):
        return fn(Failover(self.first.map(fn), self.second.map(fn)))

    def reads(self, t, present, avail, node_dim):
        first = self.first.computable(t, avail)
        return merge_parts(self.first.reads(t, present & first, avail, node_dim),
                           self.second.reads(t, present & ~first, avail, node_dim), self)

    def __str__(self) -> str:
        return f"Failover({self.first}, {self.second})"


@dataclass(frozen=True)
class Sum(Descriptor):
    srcs: tuple[Descriptor, ...]

    def children(self):
        return self.srcs

    def computable(self, t, avail):
        ok = np.ones(t.shape, dtype=bool)
        for s in self.srcs:
            ok &= s.computable(t, avail)
        return ok

    def map(self, fn):
        return fn(Sum(tuple(s.map(fn) for s in self.srcs)))

    def reads(self, t, present, avail, node_dim):
        parts = self.srcs[0].reads(t, present, avail, node_dim)
        for src in self.srcs[1:]:
            parts = merge_parts(parts, src.reads(t, present, avail, node_dim), self)
        return parts

    def __str__(self) -> str:
        return "Sum(" + ", ".join(map(str, self.srcs)) + ")"


@dataclass(frozen=True)
class Append(Descriptor):
    srcs: tuple[Descriptor, ...]

    def children(self):
        return self.srcs

    def dim(self, node_dim):
        dims = [s.dim(node_dim) for s in self.srcs]
        return None if any(d is None for d in dims) else sum(dims)

    def computable(self, t, avail):
        ok = np.ones(t.shape, dtype=bool)
        for s in self.srcs:
            ok &= s.computable(t, avail)
        return ok

    def map(self, fn):
        return fn(Append(tuple(s.map(fn) for s in self.srcs)))

    def reads(self, t, present, avail, node_dim):
        return [p for src in self.srcs for p in src.reads(t, present, avail, node_dim)]

    def __str__(self) -> str:
        return "Append(" + ", ".join(map(str, self.srcs)) + ")"


def rename_nodes(desc: Descriptor, mapping: dict[str, str]) -> Descriptor:
    """The same descriptor with node references renamed by ``mapping``."""
    return desc.map(lambda d: NodeRef(mapping.get(d.name, d.name))
                    if isinstance(d, NodeRef) else d)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _TOKEN.findall(text)
        if "".join(self.tokens) != re.sub(r"\s+", "", text):
            raise GraphError(f"cannot tokenize descriptor {text!r}")
        self.i = 0

    def fail(self, expected: str) -> GraphError:
        got = self.tokens[self.i] if self.i < len(self.tokens) else "end of descriptor"
        return GraphError(f"descriptor {self.text!r}: expected {expected}, got {got!r}")

    def next(self, expected: str) -> str:
        if self.i >= len(self.tokens):
            raise self.fail(expected)
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, tok: str) -> None:
        if self.next(repr(tok)) != tok:
            self.i -= 1
            raise self.fail(repr(tok))

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def int(self, what: str) -> int:
        tok = self.next(what)
        if not re.fullmatch(r"[+-]?\d+", tok):
            self.i -= 1
            raise self.fail(what)
        return int(tok)

    def float(self, what: str) -> float:
        tok = self.next(what)
        try:
            return float(tok)
        except ValueError:
            self.i -= 1
            raise self.fail(what) from None

    def list(self) -> list[Descriptor]:
        items = [self.desc()]
        while self.peek() == ",":
            self.i += 1
            items.append(self.desc())
        self.expect(")")
        return items

    def desc(self) -> Descriptor:
        tok = self.next("a descriptor")
        if self.peek() == "(" and tok in _FUNCS:
            self.i += 1
            return _FUNCS[tok](self)
        if not is_valid_name(tok):
            self.i -= 1
            raise self.fail("a node name or descriptor")
        return NodeRef(tok)


def _offset(p: _Parser) -> Descriptor:
    src = p.desc()
    p.expect(",")
    t = p.int("a time offset")
    x = 0
    if p.peek() == ",":
        p.i += 1
        x = p.int("an x offset")
    p.expect(")")
    return Offset(src, t, x)


def _round(p: _Parser) -> Descriptor:
    src = p.desc()
    p.expect(",")
    m = p.int("a time modulus")
    if m <= 0:
        raise GraphError(f"descriptor {p.text!r}: Round modulus must be positive")
    p.expect(")")
    return Round(src, m)


def _replace(p: _Parser) -> Descriptor:
    src = p.desc()
    p.expect(",")
    var = p.next("t or x")
    if var not in ("t", "x"):
        p.i -= 1
        raise p.fail("t or x")
    p.expect(",")
    v = p.int("an index value")
    p.expect(")")
    return ReplaceIndex(src, var, v)


def _scale(p: _Parser) -> Descriptor:
    s = p.float("a scale")
    p.expect(",")
    src = p.desc()
    p.expect(")")
    return Scale(s, src)


def _const(p: _Parser) -> Descriptor:
    v = p.float("a constant value")
    p.expect(",")
    d = p.int("a dimension")
    if d <= 0:
        raise GraphError(f"descriptor {p.text!r}: Const dimension must be positive")
    p.expect(")")
    return Const(v, d)


def _ifdefined(p: _Parser) -> Descriptor:
    src = p.desc()
    p.expect(")")
    return IfDefined(src)


def _failover(p: _Parser) -> Descriptor:
    items = p.list()
    if len(items) != 2:
        raise GraphError(f"descriptor {p.text!r}: Failover takes two arguments")
    return Failover(*items)


_FUNCS: dict[str, Callable[[_Parser], Descriptor]] = {
    "Append": lambda p: Append(tuple(p.list())),
    "Sum": lambda p: Sum(tuple(p.list())),
    "Switch": lambda p: Switch(tuple(p.list())),
    "Failover": _failover, "IfDefined": _ifdefined, "Offset": _offset, "Round": _round,
    "ReplaceIndex": _replace, "Scale": _scale, "Const": _const,
}


def parse_descriptor(text: str) -> Descriptor:
    """Parse a descriptor expression (raises GraphError with what was expected)."""
    p = _Parser(text)
    d = p.desc()
    if p.peek() is not None:
        raise p.fail("end of descriptor")
    return d
