"""Whole-file input (``-`` is stdin) and atomic output (``-`` is stdout)."""
from __future__ import annotations

import os
import sys
import tempfile
from typing import Iterable

from ..errors import KaldiCompressError


def read_input(path: str) -> bytearray:
    """The whole file (or stdin for ``-``) as one writable buffer."""
    if path == "-":
        return bytearray(sys.stdin.buffer.read())
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            buf = bytearray(size)
            got = f.readinto(buf)
            if got != size:
                raise KaldiCompressError(f"{path}: short read ({got} of {size} bytes)")
            return buf
    except OSError as e:
        raise KaldiCompressError(f"{path}: cannot read: {e.strerror or e}") from None


def display_name(path: str) -> str:
    return "<stdin>" if path == "-" else path


def same_file(a: str, b: str) -> bool:
    if a == "-" or b == "-":
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def write_output(path: str, chunks: Iterable[bytes | memoryview]) -> None:
    """Write chunks to ``path`` through a temporary file renamed at the end.

    An interrupted or failed write leaves no partial output behind.
    """
    if path == "-":
        out = sys.stdout.buffer
        for c in chunks:
            out.write(c)
        out.flush()
        return
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                   dir=directory)
    except OSError as e:
        raise KaldiCompressError(f"{path}: cannot write: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise KaldiCompressError(f"{path}: cannot write: {e.strerror or e}") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
