"""Component base class: schema-driven, field-exact reading and writing.

A Kaldi component body is ``<Type>``, a sequence of ``<Token> value`` fields, and
``</Type>``.  Each class declares its fields in Kaldi's writer order (optional and
legacy fields included) as a ``SCHEMA``.  A component keeps the fields exactly as
read -- order, presence, float width (4 or 8 bytes) -- so writing it back
reproduces the input byte for byte, and text <-> binary conversion changes only
the representation.
"""
from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from ...errors import KaldiFormatError

# Field kinds.
INT, F32, F64, BOOL, VEC, MAT, IVEC, IPVEC, FLAG, INT2, F32X2, MODEL = (
    "int", "f32", "f64", "bool", "vec", "mat", "ivec", "ipvec", "flag", "int2", "f32x2", "model")


KIND_NAMES = {INT: "int32", F32: "float", F64: "double", BOOL: "bool", VEC: "vector",
              MAT: "matrix", IVEC: "integer vector", IPVEC: "integer pair vector",
              INT2: "two int32", F32X2: "two floats", FLAG: "flag"}


@dataclass(frozen=True)
class Field:
    token: str
    kind: str
    optional: bool = False


def opt(token: str, kind: str) -> Field:
    return Field(token, kind, True)


# UpdatableComponent common header (ReadUpdatableCommon / WriteUpdatableCommon).
UPDATABLE_COMMON = (opt("<LearningRateFactor>", F32), opt("<IsGradient>", BOOL),
                    opt("<MaxChange>", F32), opt("<L2Regularize>", F32),
                    Field("<LearningRate>", F32))


# kinds read and written by one reader/writer method each: read_<name> / write_<name>
_PLAIN = {INT: "int", BOOL: "bool", VEC: "vector", MAT: "matrix", IVEC: "int_vector",
          IPVEC: "int_pair_vector"}


def read_value(r, kind: str, what: str):
    """Read one field value of ``kind`` (text floats take the kind's width)."""
    plain = _PLAIN.get(kind)
    if plain is not None:
        return getattr(r, "read_" + plain)(what)
    if kind == F32:
        v = r.read_float(what)
        return v if r.binary else np.float32(v)
    if kind == F64:
        v = r.read_float(what)
        return v if r.binary else np.float64(float(v))
    if kind == FLAG:
        return True
    if kind == INT2:
        return (r.read_int(what), r.read_int(what))
    if kind == F32X2:
        return tuple(read_value(r, F32, what) for _ in range(2))
    raise AssertionError(kind)


def write_value(w, kind: str, value) -> None:
    plain = _PLAIN.get(kind)
    if plain is not None:
        getattr(w, "write_" + plain)(value)
    elif kind in (F32, F64):
        w.write_float(value)
    elif kind == INT2:
        w.write_int(value[0])
        w.write_int(value[1])
    elif kind == F32X2:
        w.write_float(value[0])
        w.write_float(value[1])
    elif kind == MODEL:
        value.write(w)
    elif kind != FLAG:
        raise AssertionError(kind)


def coerce(kind: str, value):
    """Convert a Python value to the stored representation of ``kind``."""
    if kind == F32:
        return np.float32(value)
    if kind == F64:
        return np.float64(value)
    if kind == INT:
        return int(value)
    if kind == BOOL:
        return bool(value)
    if kind in (VEC, MAT):
        arr = np.asarray(value)
        return arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float32)
    if kind in (IVEC, IPVEC):
        return np.asarray(value, dtype=np.int32)
    if kind == F32X2:
        return tuple(np.float32(v) for v in value)
    if kind == INT2:
        return tuple(int(v) for v in value)
    return value


class FieldStruct:
    """An object serialised as ``<Tag> fields... </Tag>`` with a schema."""

    TYPE: ClassVar[str] = ""
    SCHEMA: ClassVar[tuple[Field, ...]] = ()
    END_TOKENS: ClassVar[tuple[str, ...]] = ()  # accepted closing tokens besides </TYPE>

    def __init__(self, fields: list[tuple[str, Any]] | None = None,
                 end_token: str | None = None):
        self.fields: list[tuple[str, Any]] = fields if fields is not None else []
        self.end_token = end_token or f"</{self.TYPE}>"

    # --- field access ------------------------------------------------------
    @classmethod
    def _spec(cls, token: str) -> Field:
        for f in cls.SCHEMA:
            if f.token == token:
                return f
        raise KeyError(f"{cls.TYPE} has no field {token}")

    def has(self, token: str) -> bool:
        return any(t == token for t, _ in self.fields)

    def get(self, token: str, default=None):
        for t, v in self.fields:
            if t == token:
                return v
        return default

    def __getitem__(self, token: str):
        for t, v in self.fields:
            if t == token:
                return v
        raise KeyError(f"{self.TYPE} has no field {token}")

    def set(self, token: str, value) -> None:
        """Set a field, inserting it at its schema position if absent."""
        value = coerce(self._spec(token).kind, value)
        for i, (t, _) in enumerate(self.fields):
            if t == token:
                self.fields[i] = (token, value)
                return
        order = [f.token for f in self.SCHEMA]
        pos = order.index(token)
        at = len(self.fields)
        for i, (t, _) in enumerate(self.fields):
            if t in order and order.index(t) > pos:
                at = i
                break
        self.fields.insert(at, (token, value))

    def remove(self, token: str) -> None:
        self.fields = [(t, v) for t, v in self.fields if t != token]

    @classmethod
    def build(cls, values: dict[str, Any]) -> "FieldStruct":
        """New object with the given fields, in schema (= Kaldi writer) order."""
        unknown = set(values) - {f.token for f in cls.SCHEMA}
        if unknown:
            raise KeyError(f"{cls.TYPE}: unknown fields {sorted(unknown)}")
        fields = []
        for f in cls.SCHEMA:
            if f.token in values and values[f.token] is not None:
                fields.append((f.token, coerce(f.kind, values[f.token])))
        return cls(fields)

    # --- serialisation -----------------------------------------------------
    @classmethod
    def read_body(cls, r, first_token: str | None = None) -> "FieldStruct":
        """Read fields after the opening tag, up to and including the closing tag."""
        fields: list[tuple[str, Any]] = []
        schema = cls.SCHEMA
        i = 0
        end = f"</{cls.TYPE}>"
        tok = first_token
        while True:
            start = r.pos
            if tok is None:
                tok = r.read_token(f"a field of {cls.TYPE} or {end}")
            if tok == end or tok in cls.END_TOKENS:
                missing = [f.token for f in schema[i:] if not f.optional]
                if missing:
                    raise r.error(f"{missing[0]} in {cls.TYPE}", repr(tok), at=start)
                return cls(fields, tok)
            j = i
            while j < len(schema) and schema[j].token != tok:
                if not schema[j].optional:
                    raise r.error(f"{schema[j].token} in {cls.TYPE}", repr(tok), at=start)
                j += 1
            if j == len(schema):
                raise r.error(f"{end}", repr(tok), at=start)
            spec = schema[j]
            if spec.kind == MODEL:
                value = MODEL_TYPES[tok].read_new(r)
            else:
                value = read_value(r, spec.kind, f"{spec.token} {KIND_NAMES[spec.kind]}")
            fields.append((tok, value))
            i = j + 1
            tok = None

    @classmethod
    def read_new(cls, r) -> "FieldStruct":
        r.expect_token(f"<{cls.TYPE}>")
        return cls.read_body(r)

    def write(self, w) -> None:
        w.write_token(f"<{self.TYPE}>")
        for tok, value in self.fields:
            w.write_token(tok)
            write_value(w, self._spec(tok).kind, value)
        w.write_token(self.end_token)


MODEL_TYPES: dict[str, type[FieldStruct]] = {}


class Component(FieldStruct):
    """A Kaldi nnet3 component (one subclass per Kaldi type)."""

    REGISTRY: ClassVar[dict[str, type["Component"]]] = {}
    UPDATABLE: ClassVar[bool] = False

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.TYPE:
            Component.REGISTRY[cls.TYPE] = cls

    @property
    def type(self) -> str:
        return self.TYPE

    @property
    def input_dim(self) -> int | None:
        raise NotImplementedError

    @property
    def output_dim(self) -> int | None:
        raise NotImplementedError

    @property
    def is_updatable(self) -> bool:
        return self.UPDATABLE

    @property
    def num_parameters(self) -> int:
        """Parameters as Kaldi's NumParameters counts them (updatable only)."""
        return 0

    def computable(self, t: np.ndarray, inp: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Whether the output at times ``t`` is computable, given ``inp(times)``
        telling where the input is.  Simple components map t to t."""
        return inp(t)

    def copy(self) -> "Component":
        return type(self)(list(self.fields), self.end_token)

    def __repr__(self) -> str:
        return f"<{self.TYPE} in={self.input_dim} out={self.output_dim}>"


class DimComponent(Component):
    """A component whose input and output dimension is its ``<Dim>`` field."""

    @property
    def input_dim(self) -> int:
        return self["<Dim>"]

    output_dim = input_dim


class UnknownComponent(Component):
    """A component type this package does not know: kept as opaque bytes."""

    def __init__(self, type_name: str, raw: bytes, binary: bool):
        super().__init__([])
        self.type_name, self.raw, self.binary = type_name, raw, binary

    @property
    def type(self) -> str:
        return self.type_name

    @property
    def input_dim(self):
        return None

    @property
    def output_dim(self):
        return None

    def copy(self) -> "UnknownComponent":
        return UnknownComponent(self.type_name, self.raw, self.binary)

    def write(self, w) -> None:
        if w.binary != self.binary:
            raise KaldiFormatError("<output>", 0, f"a known component type to convert "
                                   f"{self.type_name} between binary and text")
        w.write_token(f"<{self.type_name}>")
        w.raw(self.raw)


def read_component(r) -> Component:
    """Kaldi Component::ReadNew: ``<Type>`` then the type's body."""
    start = r.pos
    tag = r.read_token("a component type <...Component>")
    if not (tag.startswith("<") and tag.endswith(">") and len(tag) > 2):
        raise r.error("a component type <...Component>", repr(tag), at=start)
    name = tag[1:-1]
    cls = Component.REGISTRY.get(name)
    if cls is not None:
        return cls.read_body(r)
    # Unknown type: keep everything up to and including "</Type> ".
    end_tag = f"</{name}>".encode("ascii")
    body_start = r.pos
    end = r.buf.find(end_tag, body_start)
    while end >= 0 and (end + len(end_tag) >= len(r.buf)
                        or r.buf[end + len(end_tag)] not in b" \t\n\r"):
        end = r.buf.find(end_tag, end + 1)
    if end < 0:
        raise r.error(f"</{name}> closing the unknown component type {name}", at=body_start)
    r.pos = end + len(end_tag) + 1
    warnings.warn(f"unknown component type {name}: kept as opaque data and written back "
                  "unchanged", stacklevel=2)
    return UnknownComponent(name, bytes(r.buf[body_start:r.pos]), r.binary)


def match_glob(pattern: str, name: str) -> bool:
    """Kaldi-style name pattern: ``*`` (and ``?``) wildcards, whole-name match."""
    return fnmatch.fnmatchcase(name, pattern)
