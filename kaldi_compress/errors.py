"""Errors raised for malformed Kaldi files and invalid requests."""
from __future__ import annotations


class KaldiCompressError(Exception):
    """Base class: every error the CLI reports as a one-line message."""


class KaldiFormatError(KaldiCompressError):
    """A Kaldi file does not hold what the format requires at some byte offset."""

    def __init__(self, path: str, offset: int, expected: str, got: str = ""):
        self.path, self.offset, self.expected, self.got = path, offset, expected, got
        msg = f"{path}: byte {offset}: expected {expected}"
        if got:
            msg += f", got {got}"
        super().__init__(msg)


class GraphError(KaldiCompressError):
    """The network graph (config lines, descriptors, dimensions) is inconsistent."""


def show_bytes(data: bytes, limit: int = 20) -> str:
    """A short printable rendering of raw bytes for error messages."""
    if not data:
        return "end of file"
    text = repr(bytes(data[:limit]))[1:]
    return text + ("..." if len(data) > limit else "")
