"""Frame-by-frame layers: scales, offsets, batch norm, nonlinearities, reductions."""
from __future__ import annotations

import numpy as np
import torch

from ...errors import KaldiCompressError
from ...nnet3 import components as C
from .base import Layer, float_tensor, linear


def _tiled(vec: torch.Tensor, dim: int) -> torch.Tensor:
    return vec.repeat(dim // vec.shape[0])


class PerElementScale(Layer):
    """y = x * params."""

    def __init__(self, comp):
        super().__init__(comp)
        self._register("scales", "<Params>")

    def forward(self, x, index=None):
        return x * self.scales


class PerElementOffset(Layer):
    """y = x + offsets (offsets repeated when dim is a multiple of their size)."""

    def __init__(self, comp):
        super().__init__(comp)
        self._register("offsets", "<Offsets>")

    def forward(self, x, index=None):
        return x + _tiled(self.offsets, x.shape[-1])


class ScaleAndOffset(Layer):
    """y = x * s + o per block of size len(s); |s| is floored to 1e-4 (EnsureNonzero)."""

    def __init__(self, comp):
        super().__init__(comp)
        self._register("scales", "<Scales>")
        self._register("offsets", "<Offsets>")

    def forward(self, x, index=None):
        eps = 1e-4
        s = self.scales
        s = torch.where(s.abs() >= eps, s, torch.where(s >= 0, eps, -eps))
        d = x.shape[-1]
        return x * _tiled(s, d) + _tiled(self.offsets, d)


class FixedScale(Layer):
    """y = x * scales."""

    def __init__(self, comp):
        super().__init__(comp)
        self._register("scales", "<Scales>")

    def forward(self, x, index=None):
        return x * self.scales


class FixedBias(Layer):
    """y = x + bias."""

    def __init__(self, comp):
        super().__init__(comp)
        self._register("bias", "<Bias>")

    def forward(self, x, index=None):
        return x + self.bias


class Scaled(Layer):
    """y = c x: DropoutComponent in test mode (c = 1 - p), BackpropTruncation (c = scale)."""

    def __init__(self, comp):
        super().__init__(comp)
        if isinstance(comp, C.DropoutComponent):
            self.factor = float(np.float32(1.0) - np.float32(comp["<DropoutProportion>"]))
        else:
            self.factor = float(comp.get("<Scale>", 1.0))

    def forward(self, x, index=None):
        return x if self.factor == 1.0 else x * self.factor


class Identity(Layer):
    """y = x: NoOp, ClipGradient, and the test mode of GeneralDropout and SpecAugment."""

    def forward(self, x, index=None):
        return x


def batchnorm_test_transform(comp: C.BatchNormComponent) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) per block column, computed in float32 in Kaldi's order.

    Kaldi stores mean and variance, keeps count*mean and count*(var + mean^2) in
    double, then derives mean' = sum/count, var' = sumsq/count - mean'^2 in float:
    scale = target_rms * (max(var', 0) + epsilon)^-0.5, offset = -mean' * scale.
    """
    count = float(comp["<Count>"])
    if count <= 0:
        raise KaldiCompressError(f"BatchNormComponent has no statistics (count {count}): "
                                 "test mode is undefined")
    mean = np.asarray(comp["<StatsMean>"], dtype=np.float64)
    var = np.asarray(comp["<StatsVar>"], dtype=np.float64)
    total = mean * count
    total_sq = (var + mean * mean) * count
    f32 = np.float32
    neg_mean = total.astype(f32) * f32(-1.0 / count)
    scale = total_sq.astype(f32) * f32(1.0 / count) - neg_mean * neg_mean
    scale = np.maximum(scale, f32(0.0)) + f32(comp["<Epsilon>"])
    scale = (scale ** f32(-0.5)) * f32(comp["<TargetRms>"])
    return scale.astype(f32), (neg_mean * scale).astype(f32)


class BatchNorm(Layer):
    """Test mode: y = x * scale + offset per block column (see batchnorm_test_transform)."""

    def __init__(self, comp):
        super().__init__(comp)
        scale, offset = batchnorm_test_transform(comp)
        repeats = comp.input_dim // len(scale)
        self.register_buffer("scale", float_tensor(np.tile(scale, repeats)))
        self.register_buffer("offset", float_tensor(np.tile(offset, repeats)))

    def forward(self, x, index=None):
        return torch.addcmul(self.offset, x, self.scale)

    def forward_inplace(self, x, index=None):
        return torch.addcmul(self.offset, x, self.scale, out=x)


# --- nonlinearities and reductions ---------------------------------------------------
_INPLACE = {"SigmoidComponent": torch.sigmoid_, "TanhComponent": torch.tanh_,
            "RectifiedLinearComponent": torch.relu_}


class Nonlinear(Layer):
    """Sigmoid, Tanh, RectifiedLinear, Softmax (floored at 1e-20), LogSoftmax."""

    def __init__(self, comp):
        super().__init__(comp)
        self.kind = type(comp).__name__

    def forward(self, x, index=None):
        if self.kind == "SigmoidComponent":
            return torch.sigmoid(x)
        if self.kind == "TanhComponent":
            return torch.tanh(x)
        if self.kind == "RectifiedLinearComponent":
            return torch.relu(x)
        if self.kind == "SoftmaxComponent":
            return torch.softmax(x, dim=-1).clamp_min(1e-20)
        return torch.log_softmax(x, dim=-1)

    def forward_inplace(self, x, index=None):
        inplace = _INPLACE.get(self.kind)
        return inplace(x) if inplace else self(x, index)


class Permute(Layer):
    """y[i] = x[column_map[i]]."""

    def __init__(self, comp):
        super().__init__(comp)
        self.register_buffer("columns", torch.as_tensor(comp.column_map, dtype=torch.long))

    def forward(self, x, index=None):
        return x.index_select(-1, self.columns)


class SumGroup(Layer):
    """y[g] = sum of the g-th run of consecutive inputs (run lengths <Sizes>)."""

    def __init__(self, comp):
        super().__init__(comp)
        sizes = np.asarray(comp["<Sizes>"], dtype=np.int64)
        group = np.repeat(np.arange(len(sizes)), sizes)
        m = np.zeros((len(sizes), int(sizes.sum())), dtype=np.float32)
        m[group, np.arange(len(group))] = 1.0
        self.register_buffer("matrix", torch.as_tensor(m))

    def forward(self, x, index=None):
        return linear(x, self.matrix)


class SumBlock(Layer):
    """y[j] = scale * sum_b x[b * output_dim + j]."""

    def __init__(self, comp):
        super().__init__(comp)
        self.out_dim = comp.output_dim
        self.scale = float(comp["<Scale>"])

    def forward(self, x, index=None):
        return x.reshape(*x.shape[:-1], -1, self.out_dim).sum(-2) * self.scale


class Pnorm(Layer):
    """y[j] = 2-norm of the j-th group of input_dim/output_dim consecutive inputs."""

    def __init__(self, comp):
        super().__init__(comp)
        self.out_dim = comp.output_dim

    def forward(self, x, index=None):
        return x.reshape(*x.shape[:-1], self.out_dim, -1).pow(2).sum(-1).sqrt()


class ElementwiseProduct(Layer):
    """y = product over the input_dim/output_dim input blocks, element-wise."""

    def __init__(self, comp):
        super().__init__(comp)
        self.out_dim = comp.output_dim

    def forward(self, x, index=None):
        return x.reshape(*x.shape[:-1], -1, self.out_dim).prod(-2)


class Normalize(Layer):
    """Per block: y = x / sqrt(max(|x|^2 / (D target_rms^2), 2^-66)); with
    add-log-stddev each block is followed by log(target_rms * sqrt(that mean square))."""

    def __init__(self, comp):
        super().__init__(comp)
        self.block = comp.block_dim
        self.target_rms = float(comp.get("<TargetRms>", 1.0))
        self.add_log_stddev = bool(comp.get("<AddLogStddev>", False))

    def forward(self, x, index=None):
        xb = x.reshape(*x.shape[:-1], -1, self.block)
        ms = xb.pow(2).sum(-1, keepdim=True) / (self.block * self.target_rms ** 2)
        inv = ms.clamp_min(2.0 ** -66).rsqrt()
        y = xb * inv
        if self.add_log_stddev:
            y = torch.cat([y, np.log(self.target_rms) - torch.log(inv)], dim=-1)
        return y.flatten(-2)


class ConstantOutput(Layer):
    """y = the stored <Output> vector, whatever the input (ConstantFunctionComponent)."""

    def __init__(self, comp):
        super().__init__(comp)
        self._register("output", "<Output>")

    def forward(self, x, index=None):
        return self.output.expand(*x.shape[:-1], self.output.shape[0])


class LstmNonlinearity(Layer):
    """Input (i, f, c_in, o, c_prev [, dropout scales]) -> (c, m):
    i = s(i + w_ic c_prev), f = s(f + w_fc c_prev), c = f c_prev + i tanh(c_in),
    o = s(o + w_oc c), m = o tanh(c)  (s = sigmoid; scales multiply i, f, o)."""

    def __init__(self, comp):
        super().__init__(comp)
        self.cell = comp.cell_dim
        self._register("params", "<Params>")

    def forward(self, x, index=None):
        c = self.cell
        i_in, f_in, c_in, o_in, c_prev = (x[..., k * c:(k + 1) * c] for k in range(5))
        if x.shape[-1] == 5 * c + 3:
            i_s, f_s, o_s = (x[..., 5 * c + k:5 * c + k + 1] for k in range(3))
        else:
            i_s = f_s = o_s = 1.0
        w_ic, w_fc, w_oc = self.params
        i_t = torch.sigmoid(i_in + w_ic * c_prev)
        f_t = torch.sigmoid(f_in + w_fc * c_prev)
        c_t = f_t * f_s * c_prev + i_t * i_s * torch.tanh(c_in)
        o_t = torch.sigmoid(o_in + w_oc * c_t)
        return torch.cat([c_t, o_t * o_s * torch.tanh(c_t)], dim=-1)
