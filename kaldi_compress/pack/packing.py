"""``pack_model`` and ``unpack_model``: a Kaldi model <-> a ``.kcz`` pack.

Payload of a version-1 pack (inside :mod:`.container`'s header and checksum)::

    u64    size of the unpacked Kaldi model file
    u32    number of packed matrices
    blob   the skeleton: the model's binary file without those matrices' values,
           its bytes grouped by position mod 4 (byte planes of the float vectors)
    per matrix, in file order:
      str    component name, str field token (u16 length + UTF-8 each)
      u64    skeleton offset of its values (right after its FM/DM rows cols header)
      u32    rows, u32 cols
      array  the codebook (item size 4 or 8 = the matrix's FM/DM, ascending)
      blob   one index byte per weight, row-major

Unpacking splices ``codebook[indices]`` into the skeleton: the output is a function of
the pack alone, so every unpack gives the same bytes, and it is checked to parse as a
Kaldi model before it is returned.
"""
from __future__ import annotations

import numpy as np

from ..errors import KaldiCompressError, KaldiFormatError
from ..io.files import MAX_INPUT
from ..nnet3 import Model, parse_model
from .codebook import MAX_BITS, Quantized, check_bits, quantize, relative_error
from .container import Cursor, Writer, open_payload, seal
from .report import LayerRow, PackReport, peer_sizes
from .rounding import error_feedback_indices, output_error
from .skeleton import (byte_planes, from_byte_planes, matrix_header, splice, split,
                       weight_matrices)

MAX_UNPACKED = MAX_INPUT         # the largest model this tool reads is the largest it unpacks


def pack_model(model: Model, bits: int = 8, prune_threshold: float = 0.0,
               peers: bool = True, moments: dict[str, np.ndarray] | None = None
               ) -> tuple[bytes, PackReport]:
    """The ``.kcz`` bytes of ``model`` and the per-layer report (``peers``: also the
    gzip -9 and xz -9 sizes of the model's binary file, which take a few seconds).
    ``moments`` (component -> input second moment, :func:`.rounding.input_moments`):
    those matrices are rounded data-aware (:mod:`.rounding`), the others to the nearest
    codebook value."""
    try:
        check_bits(bits)
    except ValueError as e:
        raise KaldiCompressError(f"--bits: {e}") from None
    if not prune_threshold >= 0:
        raise KaldiCompressError(f"--prune-threshold must be >= 0, got {prune_threshold}")
    full, skeleton, holes = split(model)
    w = Writer()
    w.int(len(full), 8)
    w.int(len(holes), 4)
    w.blob(byte_planes(skeleton))
    rows_out = []
    for hole in holes:
        mat = hole.matrix
        if not np.isfinite(mat).all():
            raise KaldiCompressError(f"{hole.component}: {hole.field} has non-finite weights")
        start = len(w.getvalue())
        moment = (moments or {}).get(hole.component)
        q = _quantize(mat, bits, prune_threshold, moment)
        w.bytes(hole.component.encode(), 2)
        w.bytes(hole.field.encode(), 2)
        w.int(hole.offset, 8)
        w.int(mat.shape[0], 4)
        w.int(mat.shape[1], 4)
        w.array(q.codebook)
        w.blob(q.indices.tobytes())
        rows_out.append(LayerRow(hole.component, hole.field, *mat.shape, bits, q.codebook.size,
                                 mat.nbytes, len(w.getvalue()) - start,
                                 relative_error(mat, q.values()), q.pruned,
                                 None if moment is None
                                 else output_error(mat, q.values(), moment) ** 0.5))
    packed = seal(w.getvalue())
    report = PackReport(bits, prune_threshold, rows_out, len(full), len(packed),
                        peer_sizes(full) if peers else {})
    return packed, report


def quantized_model(model: Model, bits: int = 8, prune_threshold: float = 0.0,
                    moments: dict[str, np.ndarray] | None = None) -> Model:
    """A copy of ``model`` whose weight matrices are their codebook values: what
    unpacking its pack gives (for tests and for comparing outputs)."""
    out = model.copy()
    for name, token, mat in list(weight_matrices(out.nnet)):
        q = _quantize(mat, bits, prune_threshold, (moments or {}).get(name))
        out.nnet.components[name].set(token, q.values())
    return out


def _quantize(mat: np.ndarray, bits: int, prune_threshold: float,
              moment: np.ndarray | None) -> Quantized:
    """Pack's codebook of ``mat``; with an input ``moment``, its indices chosen by error
    feedback (weights pruned by the threshold stay exactly 0)."""
    q = quantize(mat, bits, prune_threshold)
    if moment is None or q.codebook.size <= 1:
        return q
    fixed = None
    if prune_threshold > 0:
        zero = int(np.searchsorted(q.codebook, 0.0))
        fixed = np.where(np.abs(mat) < prune_threshold, zero, -1)
    idx = error_feedback_indices(mat, moment, q.codebook, fixed)
    return Quantized(q.codebook, idx.astype(np.uint8), q.pruned)


def unpack_model(buf: bytes | bytearray, path: str = "<pack>") -> bytes:
    """The Kaldi binary model file held by the pack ``buf`` (``path`` names it in errors)."""
    c = open_payload(buf, path, MAX_UNPACKED)
    at = c.offset
    size = c.int(8, "the unpacked model's size", MAX_UNPACKED)
    c.budget = size
    count = c.int(4, "the number of packed matrices", c.remaining() // 32)
    skeleton = from_byte_planes(c.blob("the model skeleton"))
    pieces, last, total = [], 0, len(skeleton)
    for i in range(count):
        pieces.append(_read_matrix(c, skeleton, last, i))
        last = pieces[-1][0]
        total += len(pieces[-1][1])
    c.end()
    if total != size:
        raise c.error(f"an unpacked size of {size} bytes (the pack's own record)",
                      f"{total} bytes", at=at)
    data = splice(skeleton, pieces)
    try:
        parse_model(data, f"{path} (unpacked model)")
    except KaldiFormatError as e:
        raise KaldiCompressError(f"{path}: the unpacked model is not a Kaldi model: {e}") \
            from None
    return data


def _read_matrix(c: Cursor, skeleton: bytes, last: int, i: int) -> tuple[int, bytes]:
    what = f"packed matrix {i}"
    component = c.text(f"the component name of {what}")
    what = f"{component} (packed matrix {i})"
    c.text(f"the field token of {what}")
    at = c.offset
    offset = c.int(8, f"the skeleton offset of {what}", len(skeleton))
    if offset < last:
        raise c.error(f"the skeleton offset of {what} at least {last} (file order)",
                      str(offset), at=at)
    rows = c.int(4, f"the rows of {what}", 1 << 31)
    cols = c.int(4, f"the cols of {what}", 1 << 31)
    cb_at = c.offset
    codebook = c.array(f"the codebook of {what}", 1 << MAX_BITS)
    header = matrix_header(rows, cols, codebook.itemsize)
    if offset < len(header) or skeleton[offset - len(header):offset] != header:
        raise c.error(f"the skeleton to hold a {rows}x{cols} "
                      f"{'FM' if codebook.itemsize == 4 else 'DM'} header before offset "
                      f"{offset} for {what}", at=at)
    idx_at = c.offset
    if rows * cols * codebook.itemsize > c.budget:
        raise c.error(f"{what} to fit the unpacked size", f"{rows}x{cols}", at=at)
    indices = np.frombuffer(c.blob(f"the indices of {what}"), dtype=np.uint8)
    if indices.size != rows * cols:
        raise c.error(f"{rows * cols} indices for {what}", f"{indices.size}", at=idx_at)
    if indices.size and int(indices.max()) >= codebook.size:
        raise c.error(f"indices below the codebook size {codebook.size} for {what}",
                      f"index {int(indices.max())}", at=idx_at)
    if indices.size and codebook.size and not np.isfinite(codebook).all():
        raise c.error(f"finite codebook values for {what}", at=cb_at)
    c.budget -= indices.size * (codebook.itemsize - 1)
    return offset, codebook[indices].tobytes()
