"""Affine-family layers: y = W x (+ b), on single frames, blocks or spliced frames."""
from __future__ import annotations

import numpy as np
import torch

from ...nnet3 import components as C
from .base import Layer, gather_rows, linear, rows_of


class Affine(Layer):
    """y = W x + b (AffineComponent and subclasses, FixedAffine); Linear has no b."""

    def __init__(self, comp):
        super().__init__(comp)
        linear = "<Params>" if isinstance(comp, C.LinearComponent) else "<LinearParams>"
        self._register("weight", linear)
        if comp.has("<BiasParams>"):
            self._register("bias", "<BiasParams>")
        else:
            self.bias = None

    def forward(self, x, index=None):
        return linear(x, self.weight, self.bias)


class Tdnn(Layer):
    """y(t) = b + sum_k W_k x(t + offset_k), W = [W_1 ... W_K] (TdnnComponent).

    When the output is narrower than the input, every input frame is first
    projected by all W_k at once and the projections each output needs are added."""

    def __init__(self, comp: C.TdnnComponent):
        super().__init__(comp)
        self.offsets = np.asarray(comp.time_offsets, dtype=np.int64)
        self._register("weight", "<LinearParams>")
        if comp.bias_params.size:
            self._register("bias", "<BiasParams>")
        else:
            self.bias = None
        self._stacked: tuple[tuple[int, int], torch.Tensor] | None = None

    @property
    def time_simple(self) -> bool:
        return False

    @property
    def fixed_window(self) -> bool:
        return True

    def input_times(self, t, avail):
        return np.unique(t[:, None] + self.offsets[None, :])

    def index(self, t_out, t_in, avail):
        """(rows, project first): rows of the input frames each output reads; when
        projecting first, rows of the (frame, offset) projections instead."""
        rows = rows_of(t_in, t_out[:, None] + self.offsets[None, :])
        k = len(self.offsets)
        # projecting first moves less data when the output is narrower than the input
        project = self.weight.shape[0] < self.weight.shape[1] // k
        if project:
            rows = rows * k + np.arange(k)[None, :]
        return torch.as_tensor(rows), project

    @staticmethod
    def tap_rows(index) -> torch.Tensor:
        """The input rows each output splices (its K taps), from an ``index`` result."""
        rows, project = index
        return rows // rows.shape[-1] if project else rows

    def stacked_weight(self) -> torch.Tensor:
        """[W_1; ...; W_K] as a (K * out, in) matrix (cached until the weight changes)."""
        w = self.weight
        key = (w.data_ptr(), w._version)
        if self._stacked is None or self._stacked[0] != key or torch.is_grad_enabled():
            k = len(self.offsets)
            stacked = w.reshape(w.shape[0], k, -1).transpose(0, 1).reshape(-1, w.shape[1] // k)
            self._stacked = (key, stacked.contiguous())
        return self._stacked[1]

    def forward(self, x, index=None):
        index, project = index
        if not project:
            return linear(gather_rows(x, index).flatten(2), self.weight, self.bias)
        k, out = len(self.offsets), self.weight.shape[0]
        y = linear(x, self.stacked_weight()).reshape(x.shape[0], -1, out)  # B, T_in*K, out
        y = y.index_select(1, index.reshape(-1)).reshape(x.shape[0], -1, k, out).sum(2)
        return y if self.bias is None else y + self.bias


class BlockAffine(Layer):
    """Block-diagonal affine: block i maps input block i to output block i."""

    def __init__(self, comp):
        super().__init__(comp)
        self.num_blocks = comp["<NumBlocks>"]
        self._register("weight", "<LinearParams>")
        self._register("bias", "<BiasParams>")

    def forward(self, x, index=None):
        n = self.num_blocks
        w = self.weight.reshape(n, -1, self.weight.shape[1])    # n, out_b, in_b
        xb = x.reshape(*x.shape[:-1], n, w.shape[2])
        y = torch.einsum("btni,noi->btno", xb, w)
        return y.flatten(2) + self.bias


class RepeatedAffine(Layer):
    """The same (W, b) applied to each of NumRepeats consecutive input blocks."""

    def __init__(self, comp):
        super().__init__(comp)
        self.repeats = comp.num_repeats
        self._register("weight", "<LinearParams>")
        self._register("bias", "<BiasParams>")

    def forward(self, x, index=None):
        xb = x.reshape(*x.shape[:-1], self.repeats, self.weight.shape[1])
        return linear(xb, self.weight, self.bias).flatten(2)
