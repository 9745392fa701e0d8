"""Kaldi binary-mode primitives (src/base/io-funcs, src/matrix), little-endian.

Layouts, as Kaldi writes them:
- token: the characters, then one space;
- int32: size byte 0x04, 4 bytes; float: 0x04 + float32 or 0x08 + float64;
- bool: the single character ``T`` or ``F`` (no size byte, no space);
- vector: ``FV `` (or ``DV ``), int32 dim, raw values;
- matrix: ``FM `` (or ``DM ``), int32 rows, int32 cols, raw row-major values;
- integer vector: size byte (4), raw int32 count, raw int32 values; pair vector:
  the same with 2*count values.
Arrays are numpy views into the file buffer, so parameter bytes are never copied.
"""
from __future__ import annotations

import struct

import numpy as np

from .stream import WHITESPACE as _WS, Reader, Writer

MAX_TOKEN = 4096
_I32 = struct.Struct("<i")
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")


class BinaryReader(Reader):
    """Sequential reader over an in-memory Kaldi binary stream."""

    binary = True

    def at_end(self) -> bool:
        return self.pos >= len(self.buf)

    def _take(self, n: int, what: str) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.buf):
            raise self.error(what, f"end of file ({len(self.buf) - start} bytes left)")
        self.pos = start + n
        return start

    # tokens ---------------------------------------------------------------
    def read_token(self, expected: str = "a token") -> str:
        """Kaldi ReadToken: skip whitespace, read to whitespace, eat one space."""
        self.skip_ws()
        start = self.pos
        buf = self.buf
        end = start
        limit = min(len(buf), start + MAX_TOKEN)
        while end < limit and buf[end] not in _WS:
            end += 1
        if end == start or end >= len(buf) or buf[end] not in _WS:
            raise self.error(expected, at=start)
        tok = self._as_token(bytes(buf[start:end]), expected, start)
        self.pos = end + 1
        return tok

    # basic types ------------------------------------------------------------
    def read_int(self, what: str = "int32") -> int:
        start = self._take(5, what)
        if self.buf[start] != 4:
            raise self.error(f"{what} (size byte 4)", at=start)
        return _I32.unpack_from(self.buf, start + 1)[0]

    def read_float(self, what: str = "float") -> np.floating:
        start = self.pos
        self._take(1, what)
        size = self.buf[start]
        if size == 4:
            self._take(4, what)
            return np.float32(_F32.unpack_from(self.buf, start + 1)[0])
        if size == 8:
            self._take(8, what)
            return np.float64(_F64.unpack_from(self.buf, start + 1)[0])
        raise self.error(f"{what} (size byte 4 or 8)", at=start)

    def read_bool(self, what: str = "bool T or F") -> bool:
        start = self._take(1, what)
        c = self.buf[start]
        if c not in b"TF":
            raise self.error(what, at=start)
        return c == ord("T")

    # arrays -------------------------------------------------------------------
    def _array(self, count: int, dtype: np.dtype, what: str) -> np.ndarray:
        if count < 0:
            raise self.error(f"{what}: a non-negative size", str(count))
        start = self._take(count * np.dtype(dtype).itemsize, f"{what}: {count} values")
        return np.frombuffer(self.buf, dtype=dtype, count=count, offset=start)

    def read_vector(self, what: str = "vector") -> np.ndarray:
        start = self.pos
        tok = self.read_token(f"{what} (FV or DV)")
        if tok not in ("FV", "DV"):
            raise self.error(f"{what} (FV or DV)", repr(tok), at=start)
        dim = self.read_int(f"{what} dimension")
        return self._array(dim, np.dtype("<f4" if tok == "FV" else "<f8"), what)

    def read_matrix(self, what: str = "matrix") -> np.ndarray:
        start = self.pos
        tok = self.read_token(f"{what} (FM or DM)")
        if tok not in ("FM", "DM"):
            raise self.error(f"{what} (FM or DM; compressed matrices do not occur in models)",
                             repr(tok), at=start)
        rows = self.read_int(f"{what} rows")
        cols = self.read_int(f"{what} cols")
        if rows < 0 or cols < 0:
            raise self.error(f"{what}: non-negative rows and cols", f"{rows} x {cols}", at=start)
        flat = self._array(rows * cols, np.dtype("<f4" if tok == "FM" else "<f8"), what)
        return flat.reshape(rows, cols)

    def read_int_vector(self, what: str = "integer vector") -> np.ndarray:
        start = self._take(5, what)
        if self.buf[start] != 4:
            raise self.error(f"{what} (element size 4)", at=start)
        count = _I32.unpack_from(self.buf, start + 1)[0]
        return self._array(count, np.dtype("<i4"), what)

    def read_int_pair_vector(self, what: str = "integer pair vector") -> np.ndarray:
        start = self._take(5, what)
        if self.buf[start] != 4:
            raise self.error(f"{what} (element size 4)", at=start)
        count = _I32.unpack_from(self.buf, start + 1)[0]
        if count < 0:
            raise self.error(f"{what}: a non-negative size", str(count), at=start)
        return self._array(2 * count, np.dtype("<i4"), what).reshape(count, 2)


class BinaryWriter(Writer):
    """Accumulates a Kaldi binary stream as a list of byte chunks."""

    binary = True

    def newline(self) -> None:
        """Text-mode-only newline (nothing in binary)."""

    def write_token(self, token: str) -> None:
        self.chunks.append(token.encode("ascii") + b" ")

    def write_int(self, value: int) -> None:
        self.chunks.append(b"\x04" + _I32.pack(int(value)))

    def write_float(self, value) -> None:
        if isinstance(value, np.float64):
            self.chunks.append(b"\x08" + _F64.pack(float(value)))
        else:
            self.chunks.append(b"\x04" + _F32.pack(np.float32(value)))

    def write_bool(self, value: bool) -> None:
        self.chunks.append(b"T" if value else b"F")

    @staticmethod
    def _data(arr: np.ndarray) -> memoryview:
        return memoryview(np.ascontiguousarray(arr)).cast("B")

    def write_vector(self, vec: np.ndarray) -> None:
        dbl = vec.dtype == np.float64
        self.write_token("DV" if dbl else "FV")
        self.write_int(vec.shape[0])
        self.chunks.append(self._data(vec.astype("<f8" if dbl else "<f4", copy=False)))

    def write_matrix(self, mat: np.ndarray) -> None:
        dbl = mat.dtype == np.float64
        self.write_token("DM" if dbl else "FM")
        self.write_int(mat.shape[0])
        self.write_int(mat.shape[1])
        self.chunks.append(self._data(mat.astype("<f8" if dbl else "<f4", copy=False)))

    def write_int_vector(self, vec: np.ndarray) -> None:
        self.chunks.append(b"\x04" + _I32.pack(len(vec)))
        self.chunks.append(self._data(np.asarray(vec, dtype="<i4")))

    def write_int_pair_vector(self, pairs: np.ndarray) -> None:
        pairs = np.asarray(pairs, dtype="<i4").reshape(-1, 2)
        self.chunks.append(b"\x04" + _I32.pack(len(pairs)))
        self.chunks.append(self._data(pairs))
