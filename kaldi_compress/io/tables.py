"""Kaldi tables of matrices: rspecifiers and wspecifiers, through ``kaldi-io``.

Read: ``ark:FILE``, ``scp:FILE`` (Kaldi's read options such as ``ark,s,cs:`` are
accepted and ignored); FILE may be ``-`` (stdin) or a command ending in ``|``.
Write: ``ark:FILE`` (binary) or ``ark,t:FILE`` (text, as Kaldi prints it); FILE may
be ``-`` (stdout).
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from typing import BinaryIO, Iterator

import numpy as np

from ..errors import KaldiCompressError
from .files import read_input
from .text import TextWriter


def _import_kaldi_io():
    """kaldi-io prints a KALDI_ROOT warning and edits PATH on import: silence and undo."""
    saved = {k: os.environ.get(k) for k in ("PATH", "KALDI_ROOT")}
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            import kaldi_io
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return kaldi_io


kaldi_io = _import_kaldi_io()

_READ_OPTS = {"s", "cs", "o", "p", "ns", "ncs", "no", "np", "t", "b", "bg", "f", "nf"}


def _split(spec: str, what: str) -> tuple[str, set[str], str]:
    kind, sep, target = spec.partition(":")
    if not sep or not target:
        raise KaldiCompressError(f"bad {what} {spec!r} (expected ark:FILE or scp:FILE)")
    parts = kind.split(",")
    opts = set(parts) - {"ark", "scp"}
    types = [p for p in parts if p in ("ark", "scp")]
    if len(types) != 1 or not opts <= _READ_OPTS:
        raise KaldiCompressError(f"bad {what} {spec!r}")
    return types[0], opts, target


def read_matrices(rspecifier: str) -> Iterator[tuple[str, np.ndarray]]:
    """(key, matrix) pairs of a Kaldi rspecifier, in order."""
    kind, _, target = _split(rspecifier, "rspecifier")
    source = sys.stdin.buffer if target == "-" else target
    reader = kaldi_io.read_mat_ark if kind == "ark" else kaldi_io.read_mat_scp
    try:
        for key, mat in reader(source):
            yield key, np.asarray(mat, dtype=np.float32)
    except (OSError, ValueError, AssertionError, UnicodeDecodeError) as e:
        raise KaldiCompressError(f"cannot read {rspecifier}: {e}") from None


def read_matrix_dict(rspecifier: str) -> dict[str, np.ndarray]:
    """A whole table in memory, for random access by key."""
    return dict(read_matrices(rspecifier))


class MatrixWriter:
    """Writes (key, matrix) pairs to a wspecifier ``ark[,t]:FILE``.

    A file is written under a temporary name and renamed when the writer is closed
    without error, so a failed run leaves nothing behind.
    """

    def __init__(self, wspecifier: str):
        kind, opts, target = _split(wspecifier, "wspecifier")
        if kind != "ark" or not opts <= {"t", "b", "f", "nf", "p"}:
            raise KaldiCompressError(f"bad wspecifier {wspecifier!r} (expected ark:FILE or "
                                     "ark,t:FILE)")
        self.text = "t" in opts
        self.target = target
        self.tmp = None
        if target == "-":
            self.f: BinaryIO = sys.stdout.buffer
            return
        try:
            fd, self.tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".",
                                            suffix=".tmp",
                                            dir=os.path.dirname(os.path.abspath(target)))
            self.f = os.fdopen(fd, "wb")
        except OSError as e:
            raise KaldiCompressError(f"{target}: cannot write: {e.strerror or e}") from None

    def write(self, key: str, mat: np.ndarray) -> None:
        mat = np.asarray(mat, dtype=np.float32)
        if self.text:
            w = TextWriter()
            w.write_token(key)
            w.write_matrix(mat)
            self.f.write(w.getvalue())
        else:
            kaldi_io.write_mat(self.f, mat, key=key)

    def close(self, ok: bool = True) -> None:
        """Finish the table (``ok=False``: discard a file being written)."""
        if self.tmp is None:
            self.f.flush()
            return
        self.f.close()
        try:
            if ok:
                os.chmod(self.tmp, 0o644)
                os.replace(self.tmp, self.target)
            else:
                os.unlink(self.tmp)
        except OSError as e:
            raise KaldiCompressError(f"{self.target}: cannot write: {e.strerror or e}") from None

    def __enter__(self) -> "MatrixWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(ok=exc_type is None)


def read_transcripts(path: str) -> dict[str, str]:
    """A Kaldi ``text`` file: ``utt-id transcript`` per line (``-`` reads stdin).

    Blank lines are skipped; a repeated utterance id is an error.
    """
    lines = read_input(path).splitlines()
    out: dict[str, str] = {}
    for n, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise KaldiCompressError(f"{path}: line {n}: expected UTF-8 text") from None
        parts = line.split(None, 1)
        if not parts:
            continue
        if parts[0] in out:
            raise KaldiCompressError(f"{path}: line {n}: utterance {parts[0]} appears twice")
        out[parts[0]] = parts[1] if len(parts) > 1 else ""
    return out
