"""Kaldi text-mode primitives: the same calls as :mod:`.binary`, human-readable form.

Layouts, as Kaldi writes them (stream precision 7, i.e. ``%.7g``):
- token, int, float, bool: the value then one space (``T ``/``F `` for bools);
- vector: `` [ 1 2.5 ]`` + newline (empty: `` [ ]``);
- matrix: `` [`` then per row newline, two spaces, values each followed by a
  space, then ``]`` + newline (no columns: `` [ ]``);
- integer vector ``[ 1 2 ]`` + newline; pair vector ``[ 1,2 3,4 ]`` + newline.
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import show_bytes
from .numtext import format_g7, format_g7_scalar, parse_floats
from .stream import Reader, Writer

_TOKEN = re.compile(rb"[ \t\n\r\v\f]*([^ \t\n\r\v\f]+)")
_INT = re.compile(rb"[+-]?[0-9]+\Z")


class TextReader(Reader):
    """Sequential reader over an in-memory Kaldi text stream."""

    binary = False

    def at_end(self) -> bool:
        m = _TOKEN.match(self.buf, self.pos)
        return m is None

    def _word(self, what: str) -> tuple[bytes, int]:
        m = _TOKEN.match(self.buf, self.pos)
        if m is None:
            raise self.error(what, "end of file")
        self.pos = m.end()
        return m.group(1), m.start(1)

    def read_token(self, expected: str = "a token") -> str:
        raw, start = self._word(expected)
        tok = self._as_token(raw, expected, start)
        if self.pos < len(self.buf):
            self.pos += 1  # the single whitespace character after the token
        return tok

    def read_int(self, what: str = "int32") -> int:
        raw, start = self._word(what)
        if not _INT.match(raw) or not -2**31 <= int(raw) < 2**31:
            raise self.error(what, show_bytes(raw), at=start)
        return int(raw)

    def read_float(self, what: str = "float") -> np.floating:
        raw, start = self._word(what)
        try:
            return np.float32(float(raw))
        except ValueError:
            raise self.error(what, show_bytes(raw), at=start) from None

    def read_bool(self, what: str = "bool T or F") -> bool:
        self.skip_ws()
        start = self.pos
        if start >= len(self.buf) or self.buf[start] not in b"TF":
            raise self.error(what, at=start)
        self.pos += 1
        return self.buf[start] == ord("T")

    def _bracketed(self, what: str) -> tuple[bytes, int] | None:
        """Body between ``[`` and ``]``; None for ``[]``.  Eats one newline after."""
        raw, start = self._word(f"{what} ('[')")
        if raw == b"[]":
            self._eat_newline()
            return None
        if raw != b"[":
            raise self.error(f"{what} ('[')", show_bytes(raw), at=start)
        end = self.buf.find(b"]", self.pos)
        if end < 0:
            raise self.error(f"{what} (closing ']')", "end of file")
        body = bytes(self.buf[self.pos:end])
        body_start = self.pos
        self.pos = end + 1
        self._eat_newline()
        return body, body_start

    def _eat_newline(self) -> None:
        if self.buf[self.pos:self.pos + 2] == b"\r\n":
            self.pos += 2
        elif self.buf[self.pos:self.pos + 1] == b"\n":
            self.pos += 1

    def _floats(self, body: bytes, at: int, what: str) -> np.ndarray:
        vals = parse_floats(body)
        if vals is None:
            raise self.error(f"{what}: numbers", show_bytes(body.strip()), at=at)
        return vals

    def read_vector(self, what: str = "vector") -> np.ndarray:
        got = self._bracketed(what)
        if got is None:
            return np.zeros(0, dtype=np.float32)
        body, at = got
        if b"\n" in body.rstrip(b" \t") and body.strip():
            raise self.error(f"{what}: values on one line", "a newline", at=at)
        return self._floats(body, at, what)

    def read_matrix(self, what: str = "matrix") -> np.ndarray:
        got = self._bracketed(what)
        if got is None:
            return np.zeros((0, 0), dtype=np.float32)
        body, at = got
        rows = [r for r in body.replace(b";", b"\n").split(b"\n") if r.strip()]
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        out = [self._floats(r, at, what) for r in rows]
        cols = out[0].size
        for i, r in enumerate(out):
            if r.size != cols:
                raise self.error(f"{what}: {cols} values in every row",
                                 f"{r.size} in row {i}", at=at)
        return np.vstack(out)

    def read_int_vector(self, what: str = "integer vector") -> np.ndarray:
        got = self._bracketed(what)
        if got is None:
            return np.zeros(0, dtype=np.int32)
        body, at = got
        words = body.split()
        if not all(_INT.match(w) for w in words):
            raise self.error(f"{what}: integers", show_bytes(body.strip()), at=at)
        return np.array([int(w) for w in words], dtype=np.int32)

    def read_int_pair_vector(self, what: str = "integer pair vector") -> np.ndarray:
        got = self._bracketed(what)
        if got is None:
            return np.zeros((0, 2), dtype=np.int32)
        body, at = got
        pairs = []
        for w in body.split():
            a, sep, b = w.partition(b",")
            if not (sep and _INT.match(a) and _INT.match(b)):
                raise self.error(f"{what}: pairs a,b", show_bytes(w), at=at)
            pairs.append((int(a), int(b)))
        return np.array(pairs, dtype=np.int32).reshape(-1, 2)


class TextWriter(Writer):
    """Accumulates a Kaldi text stream as a list of byte chunks."""

    binary = False

    def newline(self) -> None:
        self.chunks.append(b"\n")

    def write_token(self, token: str) -> None:
        self.chunks.append(token.encode("ascii") + b" ")

    def write_int(self, value: int) -> None:
        self.chunks.append(b"%d " % int(value))

    def write_float(self, value) -> None:
        self.chunks.append(format_g7_scalar(value).encode() + b" ")

    def write_bool(self, value: bool) -> None:
        self.chunks.append(b"T " if value else b"F ")

    def write_vector(self, vec: np.ndarray) -> None:
        self.chunks.append(b" [ " + format_g7(vec) + b"]\n")

    def write_matrix(self, mat: np.ndarray) -> None:
        if mat.shape[1] == 0:
            self.chunks.append(b" [ ]\n")
        else:
            self.chunks.append(b" [" + format_g7(mat, row_len=mat.shape[1]) + b"]\n")

    def write_int_vector(self, vec: np.ndarray) -> None:
        self.chunks.append(b"[ " + b"".join(b"%d " % int(x) for x in vec) + b"]\n")

    def write_int_pair_vector(self, pairs: np.ndarray) -> None:
        self.chunks.append(b"[ " + b"".join(b"%d,%d " % (int(a), int(b)) for a, b in pairs) + b"]\n")
