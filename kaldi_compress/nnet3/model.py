"""Whole model files: raw networks (``.raw``) and acoustic models (``.mdl``).

A binary file starts with ``\\0B``; text files have no header.  An acoustic model
is ``TransitionModel``, then the ``Nnet``, then AmNnetSimple's tail
``<LeftContext> i32 <RightContext> i32 <Priors> FV`` (am-nnet-simple.cc).  Kaldi
recomputes the contexts from the graph when reading and writes them back, and so
does :func:`write_model`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import KaldiCompressError, KaldiFormatError
from ..io.binary import BinaryReader, BinaryWriter
from ..io.files import display_name, read_input, write_output
from ..io.text import TextReader, TextWriter
from .nnet import Nnet
from .transition import TransitionModel


@dataclass
class Model:
    """A raw Nnet, or an acoustic model when ``transition_model`` is set."""
    nnet: Nnet
    transition_model: TransitionModel | None = None
    priors: np.ndarray | None = None
    left_context: int = 0        # as stored in the file (.mdl only)
    right_context: int = 0
    binary: bool = True          # format it was read in

    @property
    def is_am(self) -> bool:
        return self.transition_model is not None

    def copy(self) -> "Model":
        return Model(self.nnet.copy(), self.transition_model, self.priors,
                     self.left_context, self.right_context, self.binary)

    def write(self, w, raw: bool = False) -> None:
        if self.is_am and not raw:
            self.transition_model.write(w)
        self.nnet.write(w)
        if self.is_am and not raw:
            ctx = self.nnet.compute_context()
            left, right = (ctx.left, ctx.right) if ctx else (self.left_context, self.right_context)
            w.write_token("<LeftContext>")
            w.write_int(left)
            w.write_token("<RightContext>")
            w.write_int(right)
            w.write_token("<Priors>")
            w.write_vector(self.priors)

    def to_bytes(self, binary: bool = True, raw: bool = False) -> bytes:
        w = BinaryWriter() if binary else TextWriter()
        if binary:
            w.raw(b"\0B")
        self.write(w, raw=raw)
        return w.getvalue()


def parse_model(buf: bytes | bytearray, path: str = "<bytes>") -> Model:
    """Parse a model held in memory (binary or text, .mdl or .raw)."""
    if len(buf) >= 2 and buf[0] == 0:
        if buf[1] != ord("B"):
            raise KaldiFormatError(path, 1, "binary header \\0B", repr(bytes(buf[:2])))
        r = BinaryReader(buf, path, 2)
    else:
        r = TextReader(buf, path, 0)
    start = r.pos
    first = r.peek_token() if not r.at_end() else ""
    if first == "<TransitionModel>":
        tm = TransitionModel.read(r)
        nnet = Nnet.read(r)
        r.expect_token("<LeftContext>")
        left = r.read_int("left context")
        r.expect_token("<RightContext>")
        right = r.read_int("right context")
        r.expect_token("<Priors>")
        priors = r.read_vector("priors")
        model = Model(nnet, tm, priors, left, right, r.binary)
    elif first == "<Nnet3>":
        model = Model(Nnet.read(r), binary=r.binary)
    else:
        raise r.error("<TransitionModel> or <Nnet3> (a Kaldi nnet3 model)", at=start)
    r.skip_ws()
    if not r.at_end():
        raise r.error("end of file after the model")
    return model


def read_model(path: str) -> Model:
    """Read a Kaldi nnet3 model file (``-`` for stdin)."""
    return parse_model(read_input(path), display_name(path))


def write_model(model: Model, path: str, binary: bool = True, raw: bool = False) -> None:
    """Write ``model`` to ``path`` (``-`` for stdout) via a temporary file.

    ``raw=True`` writes only the Nnet, like ``nnet3-am-copy --raw=true``.
    """
    if raw is False and not model.is_am:
        raw = True
    try:
        data = model.to_bytes(binary=binary, raw=raw)
    except KaldiFormatError as e:
        raise KaldiCompressError(f"{display_name(path)}: {e.expected}") from None
    write_output(path, [data])
