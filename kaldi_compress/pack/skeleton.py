"""A model's Kaldi binary bytes with chosen weight matrices' values cut out.

The skeleton is exactly what :meth:`Model.to_bytes` writes, except that the raw values
of each chosen matrix are missing; its ``FM``/``DM`` token, rows and cols stay.
Splicing values of the same shapes back in gives the Kaldi file of the model with
those values, byte for byte: everything else (transition model, config, biases,
statistics, priors) is the writer's own output.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..errors import KaldiCompressError, KaldiFormatError
from ..io.binary import BinaryWriter
from ..nnet3 import Model, Nnet

# Matrix fields that hold trained weights (AffineComponent and its natural-gradient,
# block and repeated (TT core) variants, TdnnComponent, LinearComponent, convolutions).
WEIGHT_FIELDS = ("<LinearParams>", "<Params>", "<FilterParams>")


@dataclass
class Hole:
    """Where a matrix's values go in the skeleton."""
    component: str
    field: str
    offset: int              # byte offset in the skeleton
    matrix: np.ndarray       # the values that were cut out


def weight_matrices(nnet: Nnet) -> Iterable[tuple[str, str, np.ndarray]]:
    """(component, field, matrix) for each trained weight matrix.  Fixed transforms
    (FixedAffineComponent: the LDA) are not trained weights and are stored exactly:
    the LDA's columns differ in scale by 30x, which one codebook serves badly."""
    for name, comp in nnet.components.items():
        if not comp.is_updatable:
            continue
        for token, value in comp.fields:
            if token in WEIGHT_FIELDS and isinstance(value, np.ndarray) and value.ndim == 2 \
                    and value.size:
                yield name, token, value


class _HoleWriter(BinaryWriter):
    """A binary writer that notes which chunk holds each chosen matrix's values."""

    def __init__(self, chosen: dict[int, tuple[str, str]]):
        super().__init__()
        self.chosen = chosen
        self.holes: list[tuple[int, str, str, np.ndarray]] = []   # chunk index, ...

    def write_matrix(self, mat: np.ndarray) -> None:
        super().write_matrix(mat)
        label = self.chosen.get(id(mat))
        if label is not None:
            self.holes.append((len(self.chunks) - 1, *label, mat))


def split(model: Model) -> tuple[bytes, bytes, list[Hole]]:
    """(the model's binary file, its skeleton, the holes in writing order)."""
    nnet = model.nnet
    chosen = {id(m): (name, token) for name, token, m in weight_matrices(nnet)}
    w = _HoleWriter(chosen)
    w.raw(b"\0B")
    try:
        model.write(w)
    except KaldiFormatError as e:
        raise KaldiCompressError(f"cannot write the model in binary: {e.expected}") from None
    hole_at = {i: (name, token, mat) for i, name, token, mat in w.holes}
    kept, holes, size = [], [], 0
    for i, chunk in enumerate(w.chunks):
        if i in hole_at:
            name, token, mat = hole_at[i]
            holes.append(Hole(name, token, size, mat))
        else:
            kept.append(chunk)
            size += len(chunk)
    return w.getvalue(), b"".join(kept), holes


def matrix_header(rows: int, cols: int, itemsize: int) -> bytes:
    """What the binary writer puts right before a matrix's values."""
    return (b"FM " if itemsize == 4 else b"DM ") + struct.pack("<BiBi", 4, rows, 4, cols)


def splice(skeleton: bytes, pieces: list[tuple[int, bytes]]) -> bytes:
    """The skeleton with each piece's bytes inserted at its (non-decreasing) offset."""
    out, at = [], 0
    for offset, data in pieces:
        out.append(skeleton[at:offset])
        out.append(data)
        at = offset
    out.append(skeleton[at:])
    return b"".join(out)


def byte_planes(data: bytes, k: int = 4) -> bytes:
    """``data`` with its bytes grouped by position mod ``k`` (the tail shorter than ``k``
    last): the float vectors that fill the skeleton compress better byte plane by plane."""
    n = len(data) // k * k
    return np.frombuffer(data, np.uint8, n).reshape(-1, k).T.tobytes() + data[n:]


def from_byte_planes(data: bytes, k: int = 4) -> bytes:
    """The inverse of :func:`byte_planes`."""
    n = len(data) // k * k
    return np.frombuffer(data, np.uint8, n).reshape(k, -1).T.tobytes() + data[n:]
