"""Simple components: nonlinearities, fixed transforms, per-element and
dimension-changing maps (nnet-simple-component.cc).  Each maps frame t to t."""
from __future__ import annotations

import numpy as np

from .affine import UpdatableComponent
from .base import (BOOL, F32, F64, INT, IVEC, VEC, UPDATABLE_COMMON, Component, DimComponent,
                   Field, opt, read_component, read_value, write_value)


class NonlinearComponent(DimComponent):
    """Element-wise nonlinearity with training statistics (stored as averages)."""
    SCHEMA = (Field("<Dim>", INT), opt("<BlockDim>", INT), Field("<ValueAvg>", VEC),
              Field("<DerivAvg>", VEC), Field("<Count>", F64), opt("<OderivRms>", VEC),
              opt("<OderivCount>", F64), opt("<NumDimsSelfRepaired>", F64),
              opt("<NumDimsProcessed>", F64), opt("<SelfRepairLowerThreshold>", F32),
              opt("<SelfRepairUpperThreshold>", F32), opt("<SelfRepairScale>", F32))


class SigmoidComponent(NonlinearComponent):
    """y = 1 / (1 + exp(-x))."""
    TYPE = "SigmoidComponent"


class TanhComponent(NonlinearComponent):
    """y = tanh(x)."""
    TYPE = "TanhComponent"


class RectifiedLinearComponent(NonlinearComponent):
    """y = max(0, x)."""
    TYPE = "RectifiedLinearComponent"


class SoftmaxComponent(NonlinearComponent):
    """y = softmax(x) over the feature dimension."""
    TYPE = "SoftmaxComponent"


class LogSoftmaxComponent(NonlinearComponent):
    """y = log softmax(x)."""
    TYPE = "LogSoftmaxComponent"


class NoOpComponent(DimComponent):
    """y = x (backprop scaled).  Also reads the legacy nonlinear-style body."""
    TYPE = "NoOpComponent"
    SCHEMA = (Field("<Dim>", INT), opt("<ValueAvg>", VEC), opt("<DerivAvg>", VEC),
              opt("<Count>", F32), opt("<OderivRms>", VEC), opt("<OderivCount>", F32),
              opt("<NumDimsSelfRepaired>", F32), opt("<NumDimsProcessed>", F32),
              opt("<BackpropScale>", F32))


class DropoutComponent(DimComponent):
    """Training-time dropout; identity (times 1) in test mode."""
    TYPE = "DropoutComponent"
    SCHEMA = (Field("<Dim>", INT), Field("<DropoutProportion>", F32),
              opt("<DropoutPerFrame>", BOOL), opt("<TestMode>", BOOL))


class ClipGradientComponent(DimComponent):
    """Identity forward; clips gradients in training."""
    TYPE = "ClipGradientComponent"
    SCHEMA = (Field("<Dim>", INT), Field("<ClippingThreshold>", F32),
              Field("<NormBasedClipping>", BOOL),
              opt("<SelfRepairClippedProportionThreshold>", F32), opt("<SelfRepairTarget>", F32),
              opt("<SelfRepairScale>", F32), Field("<NumElementsClipped>", INT),
              Field("<NumElementsProcessed>", INT), opt("<NumSelfRepaired>", INT),
              opt("<NumBackpropped>", INT))


class PermuteComponent(Component):
    """y[i] = x[column_map[i]]."""
    TYPE = "PermuteComponent"
    SCHEMA = (Field("<ColumnMap>", IVEC),)

    @property
    def column_map(self) -> np.ndarray:
        return self["<ColumnMap>"]

    @property
    def input_dim(self) -> int:
        return len(self.column_map)

    output_dim = input_dim

    @classmethod
    def create(cls, column_map) -> "PermuteComponent":
        return cls.build({"<ColumnMap>": np.asarray(column_map, dtype=np.int32)})


class SumGroupComponent(Component):
    """y[g] = sum of the g-th group of consecutive inputs (group sizes given)."""
    TYPE = "SumGroupComponent"
    SCHEMA = (Field("<Sizes>", IVEC),)
    END_TOKENS = ("<SumGroupComponent>",)

    @property
    def input_dim(self) -> int:
        return int(np.sum(self["<Sizes>"]))

    @property
    def output_dim(self) -> int:
        return len(self["<Sizes>"])


class _InOutComponent(Component):
    SCHEMA = (Field("<InputDim>", INT), Field("<OutputDim>", INT))

    @property
    def input_dim(self) -> int:
        return self["<InputDim>"]

    @property
    def output_dim(self) -> int:
        return self["<OutputDim>"]


class ElementwiseProductComponent(_InOutComponent):
    """y = product of the input_dim/output_dim input blocks, element-wise."""
    TYPE = "ElementwiseProductComponent"


class PnormComponent(_InOutComponent):
    """y[j] = 2-norm of the j-th group of input_dim/output_dim inputs."""
    TYPE = "PnormComponent"


class SumBlockComponent(_InOutComponent):
    """y[j] = scale * sum of the j-th block (blocks interleaved by output dim)."""
    TYPE = "SumBlockComponent"
    SCHEMA = (Field("<InputDim>", INT), Field("<OutputDim>", INT), Field("<Scale>", F32))


class ScaleAndOffsetComponent(UpdatableComponent):
    """y = x * scales + offsets (per block-dim column, blocks repeated)."""
    TYPE = "ScaleAndOffsetComponent"
    SCHEMA = UPDATABLE_COMMON + (
        Field("<Dim>", INT), Field("<Scales>", VEC), Field("<Offsets>", VEC),
        Field("<UseNaturalGradient>", BOOL), Field("<Rank>", INT))

    @property
    def input_dim(self) -> int:
        return self["<Dim>"]

    output_dim = input_dim

    @property
    def num_parameters(self) -> int:
        return 2 * self["<Scales>"].size


class PerElementScaleComponent(UpdatableComponent):
    """y = x * params."""
    TYPE = "PerElementScaleComponent"
    SCHEMA = UPDATABLE_COMMON + (Field("<Params>", VEC), opt("<IsGradient>", BOOL))

    @property
    def input_dim(self) -> int:
        return self["<Params>"].size

    output_dim = input_dim
    num_parameters = input_dim


class NaturalGradientPerElementScaleComponent(PerElementScaleComponent):
    TYPE = "NaturalGradientPerElementScaleComponent"
    SCHEMA = UPDATABLE_COMMON + (
        Field("<Params>", VEC), Field("<IsGradient>", BOOL), Field("<Rank>", INT),
        Field("<UpdatePeriod>", INT), Field("<NumSamplesHistory>", F32), Field("<Alpha>", F32),
        opt("<MaxChangePerMinibatch>", F32))


class PerElementOffsetComponent(UpdatableComponent):
    """y = x + offsets (offsets repeated if dim is a multiple of their size)."""
    TYPE = "PerElementOffsetComponent"
    SCHEMA = UPDATABLE_COMMON + (
        Field("<Offsets>", VEC), opt("<IsGradient>", BOOL), opt("<Dim>", INT),
        opt("<UseNaturalGradient>", BOOL))

    @property
    def input_dim(self) -> int:
        return self.get("<Dim>", self["<Offsets>"].size)

    output_dim = input_dim

    @property
    def num_parameters(self) -> int:
        return self["<Offsets>"].size

    @classmethod
    def create(cls, offsets: np.ndarray, updatable: dict | None = None):
        values = {"<LearningRate>": 0.001, **(updatable or {})}
        values.update({"<Offsets>": np.ascontiguousarray(offsets, dtype=np.float32),
                       "<Dim>": offsets.size, "<UseNaturalGradient>": True})
        return cls.build(values)


class FixedScaleComponent(Component):
    """y = x * scales (fixed)."""
    TYPE = "FixedScaleComponent"
    SCHEMA = (Field("<Scales>", VEC),)

    @property
    def input_dim(self) -> int:
        return self["<Scales>"].size

    output_dim = input_dim


class FixedBiasComponent(Component):
    """y = x + bias (fixed)."""
    TYPE = "FixedBiasComponent"
    SCHEMA = (Field("<Bias>", VEC),)

    @property
    def input_dim(self) -> int:
        return self["<Bias>"].size

    output_dim = input_dim


class ConstantFunctionComponent(UpdatableComponent):
    """y = output (a learned constant), whatever the input."""
    TYPE = "ConstantFunctionComponent"
    SCHEMA = (opt("<LearningRateFactor>", F32), opt("<IsGradient>", BOOL),
              opt("<MaxChange>", F32), opt("<L2Regularize>", F32), opt("<LearningRate>", F32),
              Field("<InputDim>", INT), Field("<Output>", VEC), Field("<IsUpdatable>", BOOL),
              Field("<UseNaturalGradient>", BOOL))

    @property
    def input_dim(self) -> int:
        return self["<InputDim>"]

    @property
    def output_dim(self) -> int:
        return self["<Output>"].size

    @property
    def is_updatable(self) -> bool:
        return bool(self["<IsUpdatable>"])

    @property
    def num_parameters(self) -> int:
        return self.output_dim if self.is_updatable else 0


class CompositeComponent(UpdatableComponent):
    """A chain of simple components applied in sequence."""
    TYPE = "CompositeComponent"
    SCHEMA = (opt("<LearningRateFactor>", F32), opt("<IsGradient>", BOOL),
              opt("<MaxChange>", F32), opt("<L2Regularize>", F32), opt("<LearningRate>", F32),
              Field("<MaxRowsProcess>", INT), Field("<NumComponents>", INT))

    def __init__(self, fields=None, end_token=None, components=None):
        super().__init__(fields, end_token)
        self.components: list[Component] = components or []

    @classmethod
    def read_body(cls, r, first_token=None):
        head = cls._read_head(r)
        n = head["<NumComponents>"]
        if not 0 <= n < 100000:
            raise r.error("<NumComponents> in 0..99999", str(n))
        comps = [read_component(r) for _ in range(n)]
        r.expect_token("</CompositeComponent>")
        return cls(head.fields, "</CompositeComponent>", comps)

    @classmethod
    def _read_head(cls, r):
        fields = []
        for f in cls.SCHEMA:
            if f.optional and r.peek_token() != f.token:
                continue
            r.expect_token(f.token)
            fields.append((f.token, read_value(r, f.kind, f.token)))
        return cls(fields)

    def write(self, w) -> None:
        w.write_token(f"<{self.TYPE}>")
        for tok, value in self.fields:
            w.write_token(tok)
            write_value(w, self._spec(tok).kind, value)
        for c in self.components:
            c.write(w)
        w.write_token(self.end_token)

    def copy(self):
        return CompositeComponent(list(self.fields), self.end_token,
                                  [c.copy() for c in self.components])

    @property
    def input_dim(self) -> int:
        return self.components[0].input_dim

    @property
    def output_dim(self) -> int:
        return self.components[-1].output_dim

    @property
    def is_updatable(self) -> bool:
        return any(c.is_updatable for c in self.components)

    @property
    def num_parameters(self) -> int:
        return sum(c.num_parameters for c in self.components if c.is_updatable)
