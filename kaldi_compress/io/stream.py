"""What the binary and text readers (and writers) share."""
from __future__ import annotations

from ..errors import KaldiFormatError, show_bytes

WHITESPACE = b" \t\n\r\v\f"


class Reader:
    """A sequential reader over an in-memory Kaldi stream (``buf`` from ``pos``).

    Subclasses provide ``read_token`` and the typed reads (``read_int``, ...)."""

    binary: bool

    def __init__(self, buf: bytes | bytearray, path: str, pos: int = 0):
        self.buf = buf
        self.path = path
        self.pos = pos

    def error(self, expected: str, got: str | None = None, at: int | None = None):
        """A KaldiFormatError at byte ``at`` (default: here) naming what was expected."""
        pos = self.pos if at is None else at
        if got is None:
            got = show_bytes(self.buf[pos:pos + 20])
        return KaldiFormatError(self.path, pos, expected, got)

    def skip_ws(self) -> None:
        buf, pos, n = self.buf, self.pos, len(self.buf)
        while pos < n and buf[pos] in WHITESPACE:
            pos += 1
        self.pos = pos

    def read_token(self, expected: str = "a token") -> str:
        raise NotImplementedError

    def _as_token(self, raw: bytes, expected: str, start: int) -> str:
        """The word at byte ``start`` as a token: printable ASCII, else an error there."""
        try:
            tok = raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.error(expected, show_bytes(raw), at=start) from None
        if not tok.isprintable():
            raise self.error(expected, show_bytes(raw), at=start)
        return tok

    def peek_token(self) -> str:
        pos = self.pos
        try:
            return self.read_token()
        finally:
            self.pos = pos

    def expect_token(self, token: str) -> None:
        start = self.pos
        got = self.read_token(token)
        if got != token:
            raise self.error(token, repr(got), at=start)

    def read_line(self, what: str = "a line") -> bytes:
        """Bytes up to (not including) the next newline, which is consumed."""
        end = self.buf.find(b"\n", self.pos)
        if end < 0:
            raise self.error(what, "end of file")
        line = bytes(self.buf[self.pos:end])
        self.pos = end + 1
        return line


class Writer:
    """Accumulates a Kaldi stream as a list of byte chunks (see the subclasses)."""

    binary: bool

    def __init__(self):
        self.chunks: list[bytes | memoryview] = []

    def getvalue(self) -> bytes:
        return b"".join(self.chunks)

    def raw(self, data: bytes) -> None:
        self.chunks.append(data)
