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
import subprocess
import sys
import tempfile
from typing import BinaryIO, Iterator

import numpy as np

from ..errors import KaldiCompressError
from .files import read_input, read_stream
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
    """(key, matrix) pairs of a Kaldi rspecifier, in order.  A reader that stops early
    leaves the rest unread (a piped command then ends on SIGPIPE, as under Kaldi).  An
    scp's matrices are read by :func:`read_matrix`, one line at a time (kaldi-io's
    read_mat_scp skips a matrix it cannot read, with a note on stdout)."""
    kind, _, target = _split(rspecifier, "rspecifier")
    if kind == "scp":
        for key, rxfile in scp_entries(rspecifier):
            yield key, read_matrix(rxfile)
        return
    try:
        with _source(target) as source:
            for key, mat in kaldi_io.read_mat_ark(source):
                yield key, np.asarray(mat, dtype=np.float32)
    except (OSError, ValueError, AssertionError, UnicodeDecodeError) as e:
        raise KaldiCompressError(f"cannot read {rspecifier}: {e}") from None


@contextlib.contextmanager
def _source(target: str):
    """What kaldi-io reads: stdin for ``-``, the output of ``COMMAND |`` (run here, not by
    kaldi-io, whose thread only prints a command's failure: a command that fails before
    the table's end is an error), else the file name."""
    if target == "-":
        yield sys.stdin.buffer
        return
    if not target.rstrip().endswith("|"):
        yield target
        return
    command = target.rstrip()[:-1]
    proc = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE)
    read_to_end = False
    try:
        yield proc.stdout
        read_to_end = True
    finally:
        proc.stdout.close()
        status = proc.wait()
    if read_to_end and status != 0:
        raise KaldiCompressError(f"command '{command.strip()}' failed (exit status {status}); "
                                 "its table may be incomplete")


def read_matrix_dict(rspecifier: str) -> dict[str, np.ndarray]:
    """A whole table in memory, for random access by key."""
    return dict(read_matrices(rspecifier))


def scp_entries(rspecifier: str) -> list[tuple[str, str]] | None:
    """(key, rxfile) of every line of an ``scp:FILE`` rspecifier, in order; None for an
    ``ark:`` one (which can only be read in order).  The rxfile keeps its offset and
    range (``feats.ark:123[0:99]``), for :func:`read_matrix` and :func:`matrix_rows`."""
    kind, _, target = _split(rspecifier, "rspecifier")
    if kind != "scp":
        return None
    out = []
    with _source(target) as source:
        text = read_input(source) if isinstance(source, str) else read_stream(source, target)
    lines = text.splitlines()
    for n, raw in enumerate(lines, 1):
        parts = raw.decode("utf-8", "replace").split(None, 1)
        if len(parts) == 1:
            raise KaldiCompressError(f"{target}: line {n}: expected 'key rxfile'")
        if parts:
            out.append((parts[0], parts[1].strip()))
    return out


def read_matrix(rxfile: str) -> np.ndarray:
    """One matrix of an scp line's rxfile (``FILE:OFFSET`` with an optional row/column
    range, or a command ending in ``|``), as float32."""
    path, ranges = kaldi_io.kaldi_io._strip_mat_range(rxfile)
    try:
        mat = kaldi_io.read_mat(path)
    except (OSError, ValueError, AssertionError, UnicodeDecodeError) as e:
        raise KaldiCompressError(f"cannot read {rxfile}: {e}") from None
    if ranges is not None:
        mat = mat[ranges]
    return np.ascontiguousarray(mat, dtype=np.float32)


class RandomAccessMatrixReader:
    """Matrices by key (Kaldi's RandomAccessBaseFloatMatrixReader): read on demand from an
    ``scp:``, held in memory from an ``ark:`` (which can only be read in order)."""

    def __init__(self, rspecifier: str):
        entries = scp_entries(rspecifier)
        self.where = dict(entries) if entries is not None else None
        self.held = read_matrix_dict(rspecifier) if entries is None else None

    def __contains__(self, key: str) -> bool:
        return key in (self.held if self.where is None else self.where)

    def __getitem__(self, key: str):
        return self.held[key] if self.where is None else read_matrix(self.where[key])


def ivector_reader(rspecifier: str, period: int,
                   option: str = "--online-ivectors") -> RandomAccessMatrixReader | None:
    """Online i-vectors by utterance, one row per ``period`` frames (None for no table,
    ``""``); ``option`` names the table in the error when ``period`` is not positive."""
    if not rspecifier:
        return None
    if period <= 0:
        raise KaldiCompressError(f"{option} needs --online-ivector-period > 0")
    return RandomAccessMatrixReader(rspecifier)


def usable_utterances(items, ivectors, feats_rspec: str, limit: int = 0):
    """(key, value) of the (key, num_frames, value) items of a table that are not empty
    and, if ``ivectors`` (anything with ``in``) is given, have online i-vectors; with
    ``limit`` > 0 the first ``limit`` of them only (the rest is not read).  At the end: a
    warning about the skipped ones, an error if none is usable."""
    used, missing = 0, []
    for key, num_frames, value in items:
        if num_frames == 0:
            continue
        if ivectors is not None and key not in ivectors:
            missing.append(key)
            continue
        used += 1
        yield key, value
        if used == limit:
            break
    if missing and not used:
        raise KaldiCompressError(f"no online i-vectors for any utterance of {feats_rspec} "
                                 f"(first: {missing[0]})")
    if missing:
        import warnings
        warnings.warn(f"{len(missing)} utterances have no online i-vector and are skipped "
                      f"(first: {missing[0]})")
    if not used:
        raise KaldiCompressError(f"{feats_rspec}: no non-empty utterances")


def matrix_rows(rxfile: str) -> int:
    """The number of rows of an rxfile's matrix, from its binary header alone when it is
    a ``FILE:OFFSET`` (plain, or Kaldi's compressed formats); else by reading it."""
    path, ranges = kaldi_io.kaldi_io._strip_mat_range(rxfile)
    file, sep, offset = path.rpartition(":")
    if path.endswith("|") or not sep or not offset.isdigit() or file.endswith(".gz"):
        return len(read_matrix(rxfile))
    try:
        with open(file, "rb") as f:
            f.seek(int(offset))
            head = f.read(21)
    except OSError as e:
        raise KaldiCompressError(f"cannot read {rxfile}: {e.strerror or e}") from None
    kind = head[2:5]
    if head[:2] != b"\0B" or kind not in (b"FM ", b"DM ", b"CM ", b"CM2", b"CM3"):
        return len(read_matrix(rxfile))      # text, or not a matrix: let the reader say
    at = 6 if kind in (b"FM ", b"DM ") else 13   # after a size byte; after min and range
    rows = int(np.frombuffer(head[at:at + 4], dtype="<i4")[0])
    if ranges is not None:
        rows = len(range(rows)[ranges[0] if isinstance(ranges, tuple) else ranges])
    return rows


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
