"""Test-mode forward math of Kaldi nnet3 components, as torch modules.

A layer maps a batch of chunks ``x`` of shape (B, T_in, input_dim), holding the
component's input at T_in times, to (B, T_out, output_dim).  Most components map
frame t to frame t (T_in = T_out, same times).  Components that read other frames
(Tdnn, TimeHeightConvolution, statistics extraction and pooling) also say which
input times an output time reads (:meth:`Layer.input_times`; where it is computable
is the component's own ``computable``, see :mod:`kaldi_compress.nnet3.computable`)
and receive a precomputed row index from the plan
(:meth:`Layer.index`), in which row T_in stands for a zero row (an absent input).

Parameters are torch tensors copied from the component's arrays (float32);
:meth:`Layer.write_back` stores their current values in the Kaldi component, so a
later training step can update a network and save it in Kaldi's format.
"""
from __future__ import annotations

from ...errors import KaldiCompressError
from ...nnet3 import components as C
from .affine import Affine, BlockAffine, RepeatedAffine, Tdnn
from .base import Avail, Layer, gather_rows, rows_of
from .elementwise import (BatchNorm, ConstantOutput, ElementwiseProduct, FixedBias, FixedScale,
                          Identity, LstmNonlinearity, Nonlinear, Normalize, PerElementOffset,
                          PerElementScale, Permute, Pnorm, ScaleAndOffset, Scaled, SumBlock,
                          SumGroup, batchnorm_test_transform)
from .temporal import StatisticsExtraction, StatisticsPooling, TimeHeightConvolution

__all__ = ["Avail", "Layer", "Tdnn", "batchnorm_test_transform", "gather_rows", "make_layer",
           "rows_of"]

_LAYERS: dict[type, type[Layer]] = {
    C.AffineComponent: Affine, C.NaturalGradientAffineComponent: Affine,
    C.FixedAffineComponent: Affine, C.LinearComponent: Affine, C.TdnnComponent: Tdnn,
    C.BlockAffineComponent: BlockAffine, C.RepeatedAffineComponent: RepeatedAffine,
    C.NaturalGradientRepeatedAffineComponent: RepeatedAffine,
    C.PerElementScaleComponent: PerElementScale,
    C.NaturalGradientPerElementScaleComponent: PerElementScale,
    C.PerElementOffsetComponent: PerElementOffset, C.ScaleAndOffsetComponent: ScaleAndOffset,
    C.FixedScaleComponent: FixedScale, C.FixedBiasComponent: FixedBias,
    C.DropoutComponent: Scaled, C.BackpropTruncationComponent: Scaled,
    C.NoOpComponent: Identity, C.ClipGradientComponent: Identity,
    C.GeneralDropoutComponent: Identity, C.SpecAugmentTimeMaskComponent: Identity,
    C.BatchNormComponent: BatchNorm,
    C.SigmoidComponent: Nonlinear, C.TanhComponent: Nonlinear,
    C.RectifiedLinearComponent: Nonlinear, C.SoftmaxComponent: Nonlinear,
    C.LogSoftmaxComponent: Nonlinear,
    C.PermuteComponent: Permute, C.SumGroupComponent: SumGroup, C.SumBlockComponent: SumBlock,
    C.PnormComponent: Pnorm, C.ElementwiseProductComponent: ElementwiseProduct,
    C.NormalizeComponent: Normalize,
    C.ConstantFunctionComponent: ConstantOutput,
    C.LstmNonlinearityComponent: LstmNonlinearity,
    C.TimeHeightConvolutionComponent: TimeHeightConvolution,
    C.StatisticsExtractionComponent: StatisticsExtraction,
    C.StatisticsPoolingComponent: StatisticsPooling,
}


def make_layer(comp: C.Component) -> Layer:
    """The layer computing ``comp``'s test-mode forward pass."""
    cls = _LAYERS.get(type(comp))
    if cls is None:
        raise KaldiCompressError(f"the forward pass does not support {comp.type}")
    return cls(comp)
