"""Layers that read other frames than their own: convolution and statistics."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...nnet3 import components as C
from .base import FLOAT, Layer, gather_rows, rows_of, zero_padded


class TimeHeightConvolution(Layer):
    """2-D convolution over (time, height); a frame is height x filters, filter
    index fastest.  Output (t, h) = b + sum over offsets (dt, dh) of
    W_(dt,dh) x(t + dt, h * subsample + dh); heights outside the input and missing
    non-required time offsets read zeros."""

    def __init__(self, comp: C.TimeHeightConvolutionComponent):
        super().__init__(comp)
        m = comp.model
        self.f_in, self.f_out = m["<NumFiltersIn>"], m["<NumFiltersOut>"]
        self.h_in, self.h_out = m["<HeightIn>"], m["<HeightOut>"]
        offsets = np.asarray(m["<Offsets>"], dtype=np.int64).reshape(-1, 2)
        self.times = np.unique(offsets[:, 0])
        heights = np.arange(self.h_out)[None, :] * m["<HeightSubsampleOut>"] + offsets[:, 1:2]
        heights = np.where((heights >= 0) & (heights < self.h_in), heights, self.h_in)
        self.register_buffer("height_index", torch.as_tensor(heights, dtype=torch.long))
        self.register_buffer("time_slot", torch.as_tensor(
            np.searchsorted(self.times, offsets[:, 0]), dtype=torch.long))
        self._register("weight", "<LinearParams>")
        self._register("bias", "<BiasParams>")

    @property
    def time_simple(self) -> bool:
        return False

    def input_times(self, t, avail):
        want = (t[:, None] + self.times[None, :]).ravel()
        return np.unique(want[avail(want)])

    def index(self, t_out, t_in, avail):
        return zero_padded(rows_of(t_in, t_out[:, None] + self.times[None, :]), len(t_in))

    def forward(self, x, index=None):
        b = x.shape[0]
        frames = gather_rows(x, index)                           # B, T, n_times, H*F
        frames = frames.reshape(*frames.shape[:3], self.h_in, self.f_in)
        frames = torch.cat([frames, frames.new_zeros(*frames.shape[:3], 1, self.f_in)], 3)
        # patches[b, t, h_out, offset, f] = frames[b, t, slot(offset), height(offset, h_out), f]
        patches = frames[:, :, self.time_slot[:, None], self.height_index]   # B,T,O,H_out,F
        patches = patches.permute(0, 1, 3, 2, 4).flatten(3)
        y = F.linear(patches, self.weight, self.bias)                # B, T, H_out, F_out
        return y.reshape(b, -1, self.h_out * self.f_out)


class StatisticsExtraction(Layer):
    """Output t (block [p*floor(t/p), +p), p = output period): the count of available
    input frames (stepping by the input period), their sum and [sum of squares]."""

    def __init__(self, comp):
        super().__init__(comp)
        self.period_in = comp["<InputPeriod>"]
        self.period_out = comp["<OutputPeriod>"]
        self.variance = bool(comp["<IncludeVarinance>"])

    @property
    def time_simple(self) -> bool:
        return False

    def _block(self, t: np.ndarray) -> np.ndarray:
        start = (t // self.period_out) * self.period_out
        return start[:, None] + np.arange(0, self.period_out, self.period_in)[None, :]

    def input_times(self, t, avail):
        want = self._block(t).ravel()
        return np.unique(want[avail(want)])

    def index(self, t_out, t_in, avail):
        rows = rows_of(t_in, self._block(t_out))
        count = torch.as_tensor((rows >= 0).sum(1, keepdims=True), dtype=FLOAT)
        return zero_padded(rows, len(t_in)), count

    def forward(self, x, index=None):
        rows, count = index
        g = gather_rows(x, rows)                                  # B, T, P, D
        parts = [count.expand(x.shape[0], -1, 1), g.sum(2)]
        if self.variance:
            parts.append(g.pow(2).sum(2))
        return torch.cat(parts, dim=-1)


class StatisticsPooling(Layer):
    """Output t (a multiple of the input period): from the available extracted stats
    in [t - left, t + right], [log(count) x N,] mean [, sqrt(max(E[x^2] - mean^2, floor))]."""

    def __init__(self, comp):
        super().__init__(comp)
        self.period = comp["<InputPeriod>"]
        self.left, self.right = comp["<LeftContext>"], comp["<RightContext>"]
        self.num_log_count = comp["<NumLogCountFeatures>"]
        self.stddevs = bool(comp["<OutputStddevs>"])
        self.floor = float(comp["<VarianceFloor>"])

    @property
    def time_simple(self) -> bool:
        return False

    def _window(self, t: np.ndarray) -> np.ndarray:
        return t[:, None] + np.arange(-self.left, self.right + 1, self.period)[None, :]

    def input_times(self, t, avail):
        want = self._window(t).ravel()
        return np.unique(want[avail(want)])

    def index(self, t_out, t_in, avail):
        return zero_padded(rows_of(t_in, self._window(t_out)), len(t_in))

    def forward(self, x, index=None):
        s = gather_rows(x, index).sum(2)                          # B, T, D
        count = s[..., :1]
        moments = s[..., 1:] / count
        parts = [torch.log(count).expand(*count.shape[:-1], self.num_log_count)]
        if self.stddevs:
            mean, sq = moments.chunk(2, dim=-1)
            parts += [mean, (sq - mean * mean).clamp_min(self.floor).sqrt()]
        else:
            parts.append(moments)
        return torch.cat(parts, dim=-1)
