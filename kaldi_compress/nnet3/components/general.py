"""General components whose input frames may differ from the output frame
(nnet-general-component.cc, nnet-attention-component.cc)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .affine import UpdatableComponent
from .base import BOOL, F32, F64, FLAG, INT, MAT, VEC, Component, DimComponent, Field, opt


class StatisticsExtractionComponent(Component):
    """Per block of output_period frames: count, sum [, sum of squares] of the input."""
    TYPE = "StatisticsExtractionComponent"
    SCHEMA = (Field("<InputDim>", INT), Field("<InputPeriod>", INT),
              Field("<OutputPeriod>", INT), Field("<IncludeVarinance>", BOOL))

    @property
    def input_dim(self) -> int:
        return self["<InputDim>"]

    @property
    def output_dim(self) -> int:
        d = self.input_dim
        return 1 + d + (d if self["<IncludeVarinance>"] else 0)

    def computable(self, t: np.ndarray, inp: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        op, ip = self["<OutputPeriod>"], self["<InputPeriod>"]
        start = (t // op) * op
        ok = np.zeros(t.shape, dtype=bool)
        for d in range(0, op, ip):
            ok |= inp(start + d)
        return ok


class StatisticsPoolingComponent(Component):
    """Mean [and stddev] of extracted statistics over [t - left, t + right]."""
    TYPE = "StatisticsPoolingComponent"
    SCHEMA = (Field("<InputDim>", INT), Field("<InputPeriod>", INT),
              Field("<LeftContext>", INT), Field("<RightContext>", INT),
              Field("<NumLogCountFeatures>", INT), Field("<OutputStddevs>", BOOL),
              Field("<VarianceFloor>", F32))

    @property
    def input_dim(self) -> int:
        return self["<InputDim>"]

    @property
    def output_dim(self) -> int:
        return self.input_dim + self["<NumLogCountFeatures>"] - 1

    def computable(self, t: np.ndarray, inp: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        ip, lc, rc = self["<InputPeriod>"], self["<LeftContext>"], self["<RightContext>"]
        ok = np.zeros(t.shape, dtype=bool)
        for d in range(-lc, rc + 1, ip):
            ok |= inp(t + d)
        return ok & (t % ip == 0)


class GeneralDropoutComponent(DimComponent):
    """Dropout with block/time-period masks; identity in test mode or at proportion 0."""
    TYPE = "GeneralDropoutComponent"
    SCHEMA = (Field("<Dim>", INT), Field("<BlockDim>", INT), Field("<TimePeriod>", INT),
              Field("<DropoutProportion>", F32), opt("<SpecAugmentMaxProportion>", F32),
              opt("<SpecAugmentMaxRegions>", INT), opt("<TestMode>", FLAG),
              opt("<Continuous>", FLAG))


class SpecAugmentTimeMaskComponent(DimComponent):
    """Training-time SpecAugment time masking; identity in test mode."""
    TYPE = "SpecAugmentTimeMaskComponent"
    SCHEMA = (Field("<Dim>", INT), Field("<ZeroedProportion>", F32),
              Field("<TimeMaskMaxFrames>", INT), opt("<TestMode>", FLAG))


class DropoutMaskComponent(Component):
    """Outputs a dropout mask (no input used)."""
    TYPE = "DropoutMaskComponent"
    SCHEMA = (Field("<OutputDim>", INT), Field("<DropoutProportion>", F32),
              opt("<TestMode>", BOOL), opt("<Continuous>", FLAG))

    @property
    def output_dim(self) -> int:
        return self["<OutputDim>"]

    input_dim = output_dim


class BackpropTruncationComponent(DimComponent):
    """y = scale * x; truncates gradients in recurrences (training only)."""
    TYPE = "BackpropTruncationComponent"
    SCHEMA = (Field("<Dim>", INT), opt("<Scale>", F32), Field("<ClippingThreshold>", F32),
              Field("<ZeroingThreshold>", F32), Field("<ZeroingInterval>", INT),
              Field("<RecurrenceInterval>", INT), Field("<NumElementsClipped>", F64),
              Field("<NumElementsZeroed>", F64), Field("<NumElementsProcessed>", F64),
              Field("<NumZeroingBoundaries>", F64))


class DistributeComponent(Component):
    """Distributes input blocks over the x index."""
    TYPE = "DistributeComponent"
    SCHEMA = (Field("<InputDim>", INT), Field("<OutputDim>", INT))

    @property
    def input_dim(self) -> int:
        return self["<InputDim>"]

    @property
    def output_dim(self) -> int:
        return self["<OutputDim>"]


class ConstantComponent(UpdatableComponent):
    """y = output, a (learned) constant; the input is a don't-care."""
    TYPE = "ConstantComponent"
    SCHEMA = (opt("<LearningRateFactor>", F32), opt("<IsGradient>", BOOL),
              opt("<MaxChange>", F32), opt("<L2Regularize>", F32), opt("<LearningRate>", F32),
              Field("<Output>", VEC), Field("<IsUpdatable>", BOOL),
              Field("<UseNaturalGradient>", BOOL))

    @property
    def output_dim(self) -> int:
        return self["<Output>"].size

    input_dim = output_dim

    @property
    def is_updatable(self) -> bool:
        return bool(self["<IsUpdatable>"])

    @property
    def num_parameters(self) -> int:
        return self.output_dim if self.is_updatable else 0


class RestrictedAttentionComponent(Component):
    """Multi-head self-attention over a limited time window."""
    TYPE = "RestrictedAttentionComponent"
    SCHEMA = (Field("<NumHeads>", INT), Field("<KeyDim>", INT), Field("<ValueDim>", INT),
              Field("<NumLeftInputs>", INT), Field("<NumRightInputs>", INT),
              Field("<TimeStride>", INT), Field("<NumLeftInputsRequired>", INT),
              Field("<NumRightInputsRequired>", INT), Field("<OutputContext>", BOOL),
              Field("<KeyScale>", F32), Field("<StatsCount>", F64),
              Field("<EntropyStats>", VEC), Field("<PosteriorStats>", MAT))

    @property
    def _context_dim(self) -> int:
        return self["<NumLeftInputs>"] + 1 + self["<NumRightInputs>"]

    @property
    def input_dim(self) -> int:
        k, v = self["<KeyDim>"], self["<ValueDim>"]
        return self["<NumHeads>"] * (k + v + k + self._context_dim)

    @property
    def output_dim(self) -> int:
        ctx = self._context_dim if self["<OutputContext>"] else 0
        return self["<NumHeads>"] * (self["<ValueDim>"] + ctx)

    def computable(self, t: np.ndarray, inp: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        s = self["<TimeStride>"]
        ok = np.ones(t.shape, dtype=bool)
        for i in range(-self["<NumLeftInputsRequired>"], self["<NumRightInputsRequired>"] + 1):
            ok &= inp(t + i * s)
        return ok
