"""One class per Kaldi nnet3 component type; ``read_component`` dispatches on the tag."""
from .base import Component, Field, UnknownComponent, match_glob, read_component
from .affine import (AffineComponent, BlockAffineComponent, FixedAffineComponent,
                     LinearComponent, NaturalGradientAffineComponent,
                     NaturalGradientRepeatedAffineComponent, RepeatedAffineComponent,
                     TdnnComponent, UpdatableComponent)
from .simple import (ClipGradientComponent, CompositeComponent, ConstantFunctionComponent,
                     DropoutComponent, ElementwiseProductComponent, FixedBiasComponent,
                     FixedScaleComponent, LogSoftmaxComponent,
                     NaturalGradientPerElementScaleComponent, NoOpComponent, NonlinearComponent,
                     PerElementOffsetComponent, PerElementScaleComponent, PermuteComponent,
                     PnormComponent, RectifiedLinearComponent, ScaleAndOffsetComponent,
                     SigmoidComponent, SoftmaxComponent, SumBlockComponent, SumGroupComponent,
                     TanhComponent)
from .normalize import BatchNormComponent, NormalizeComponent
from .general import (BackpropTruncationComponent, ConstantComponent, DistributeComponent,
                      DropoutMaskComponent, GeneralDropoutComponent,
                      RestrictedAttentionComponent, SpecAugmentTimeMaskComponent,
                      StatisticsExtractionComponent, StatisticsPoolingComponent)
from .convolution import (ConvolutionComponent, ConvolutionModel, GruNonlinearityComponent,
                          LstmNonlinearityComponent, MaxpoolingComponent,
                          OutputGruNonlinearityComponent, TimeHeightConvolutionComponent)

__all__ = [name for name in dir() if name.endswith("Component") or name in (
    "Field", "ConvolutionModel", "read_component", "match_glob")]
