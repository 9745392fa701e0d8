"""Helpers the model tests share."""
from __future__ import annotations

from kaldi_compress.nnet3 import Model, parse_model


def reread(model: Model) -> Model:
    """The model as Kaldi would see it: written to binary and parsed back."""
    return parse_model(bytearray(model.to_bytes()), "written.mdl")
