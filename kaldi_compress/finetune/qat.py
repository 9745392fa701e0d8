"""Quantization-aware distillation (``finetune --pack-bits=B``): the student is trained
through the weights ``pack --bits=B`` will give it, and written with them.

Which matrices: exactly those ``pack`` quantizes,
:func:`kaldi_compress.pack.skeleton.weight_matrices` (the trained weights of affine,
linear, TDNN and repeated-affine (TT core) components and of the output layer; not the
fixed LDA).  For each such matrix W (the float32 "master" weights the optimizer updates):

* codebook C = (c_1 < ... < c_K), K <= 2**B: pack's own k-means,
  :func:`kaldi_compress.pack.codebook.quantize` (Lloyd's algorithm, ``scipy.cluster.vq
  .kmeans2`` from the cube-root start, minimising sum_w (w - c_i(w))**2), fit to W when
  training starts and refit at the start of every epoch; fixed within an epoch;
* forward: Q(W) = c_i(w) elementwise, i(w) the nearest codebook value (the midpoints
  between sorted values split the line, a tie goes to the lower value: pack's
  :func:`~kaldi_compress.pack.codebook.nearest`);
* backward, straight-through: dL/dW := dL/dQ, evaluated at W = Q(W) (the quantizer's
  derivative, 0 almost everywhere, is taken as the identity).  :meth:`QuantizeAware
  .quantized` puts Q(W) into the parameters for the forward and backward pass and the
  float W back before the optimizer step: the same gradient as a forward pass through
  W + (Q(W) - W).detach().

Validation runs through Q(W) too, and the best parameters are kept with their codebooks.
At the end :meth:`QuantizeAware.apply` sets W := Q(W) (the best validated W with its
codebooks, else the last W with the running epoch's): every matrix then holds at most
2**B distinct values, which ``pack --bits=B`` stores exactly (a matrix with no more
distinct values than 2**B is its own codebook).  A packed matrix the forward pass does not
use (not on the output's path) is quantized as ``pack`` would, untrained.  The codebooks
are part of the trainer's checkpoint, so a resumed run is exact.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from ..compute.forward import NnetForward
from ..errors import KaldiCompressError
from ..nnet3 import Model
from ..pack import quantized_model
from ..pack.codebook import quantize
from ..pack.skeleton import weight_matrices
from .options import check_pack_bits


def nearest_values(w: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Q(W): each weight replaced by its nearest value of the sorted ``codebook``
    (midpoints in float64, ties to the lower value, as pack's ``nearest``)."""
    c = codebook.to(torch.float64)
    idx = torch.bucketize(w.detach().to(torch.float64), (c[1:] + c[:-1]) / 2)
    return codebook[idx].to(w.dtype)


class QuantizeAware:
    """The codebooks of a student's packed weight matrices and the straight-through
    forward pass through them (see the module docstring)."""

    def __init__(self, student: NnetForward, bits: int):
        check_pack_bits(bits)
        self.bits = int(bits)
        layers = {id(layer.comp): layer for layer in student.layers}
        self.weights: dict[str, torch.nn.Parameter] = {}   # "component.attr" -> W
        for name, token, _ in weight_matrices(student.nnet):
            layer = layers.get(id(student.nnet.components[name]))
            if layer is None:        # not on the output's path: pack quantizes it at the end
                continue
            for attr, tok in layer.tokens.items():
                if tok == token:
                    self.weights[f"{name}.{attr}"] = getattr(layer, attr)
        self.codebooks: dict[str, torch.Tensor] = {}
        self.refit()

    def refit(self) -> None:
        """C := pack's k-means codebook of each current float W."""
        for name, w in self.weights.items():
            q = quantize(w.detach().cpu().numpy(), self.bits)
            self.codebooks[name] = torch.from_numpy(q.codebook).to(w.device)

    def values(self, name: str) -> torch.Tensor:
        """Q(W) of one matrix with its current codebook."""
        return nearest_values(self.weights[name], self.codebooks[name])

    @contextmanager
    def quantized(self) -> Iterator[None]:
        """Within this block the parameters hold Q(W); on leaving, the float W are put
        back.  Run the forward *and* backward pass inside: the gradients left in
        ``W.grad`` are dL/dQ, the straight-through gradient of the float W."""
        saved = {}
        with torch.no_grad():
            for name, w in self.weights.items():
                saved[name] = w.detach().clone()
                w.copy_(self.values(name))
        try:
            yield
        finally:
            with torch.no_grad():
                for name, w in self.weights.items():
                    w.copy_(saved[name])

    def apply(self) -> None:
        """W := Q(W) for good (before writing the student)."""
        with torch.no_grad():
            for name, w in self.weights.items():
                w.copy_(self.values(name))

    def on_codebooks(self, model: Model) -> Model:
        """``model`` (the written-back student) with every packed matrix on a codebook of
        at most 2**B values: pack's ``quantized_model``, which leaves the matrices already
        there (all that the forward pass uses, after :meth:`apply`) exactly as they are and
        quantizes any other one as ``pack`` would."""
        return quantized_model(model, self.bits)

    def copy_codebooks(self) -> dict[str, torch.Tensor]:
        return {k: c.detach().cpu().clone() for k, c in self.codebooks.items()}

    def load_codebooks(self, codebooks: dict[str, torch.Tensor], where: str = "checkpoint"
                       ) -> None:
        if set(codebooks) != set(self.weights):
            raise KaldiCompressError(f"{where}: its codebooks are for other weight matrices")
        for name, c in codebooks.items():
            if c.ndim != 1 or not 1 <= c.numel() <= 1 << self.bits:
                raise KaldiCompressError(f"{where}: the codebook of {name} is not one of at "
                                         f"most {1 << self.bits} values")
            self.codebooks[name] = c.to(self.weights[name].device, torch.float32)

    def state_dict(self) -> dict:
        return {"bits": self.bits, "codebooks": self.copy_codebooks()}

    def load_state_dict(self, state: dict, where: str = "checkpoint") -> None:
        if state.get("bits") != self.bits:
            raise KaldiCompressError(f"{where}: made with --pack-bits={state.get('bits')}, "
                                     f"now {self.bits} (resume with the same options)")
        self.load_codebooks(state["codebooks"], where)
