"""Whole-file input (``-`` is stdin) and atomic output (``-`` is stdout)."""
from __future__ import annotations

import os
import stat
import sys
import tempfile
from typing import Iterable

from ..errors import KaldiCompressError


MAX_INPUT = 1 << 33   # 8 GiB: more than any model or table file this tool reads


def read_input(path: str, max_bytes: int = MAX_INPUT) -> bytearray:
    """The whole file (or stdin for ``-``) as one writable buffer.  A regular file is
    read at its size in one go; a pipe, FIFO or ``<(...)`` to its end, at most
    ``max_bytes``."""
    try:
        if path == "-":
            return read_stream(sys.stdin.buffer, "<stdin>", max_bytes)
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return read_stream(f, path, max_bytes)
            if st.st_size > max_bytes:
                raise KaldiCompressError(f"{path}: {st.st_size} bytes, more than the "
                                         f"{max_bytes} this reads")
            buf = bytearray(st.st_size)
            got = f.readinto(buf)
            if got != st.st_size:
                raise KaldiCompressError(f"{path}: short read ({got} of {st.st_size} bytes)")
            return buf
    except OSError as e:
        raise KaldiCompressError(f"{path}: cannot read: {e.strerror or e}") from None


def read_stream(f, name: str, max_bytes: int = MAX_INPUT) -> bytearray:
    """A binary stream (stdin, a pipe) read to its end, at most ``max_bytes``."""
    buf = bytearray()
    while True:
        chunk = f.read(1 << 20)
        if not chunk:
            return buf
        buf += chunk
        if len(buf) > max_bytes:
            raise KaldiCompressError(f"{name}: more than the {max_bytes} bytes this reads")


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
