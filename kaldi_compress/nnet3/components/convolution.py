"""Convolution and recurrent-cell components (nnet-convolutional-component.cc,
convolution.cc, nnet-combined-component.cc)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .affine import UpdatableComponent
from .base import (BOOL, F32, F32X2, F64, INT, INT2, IPVEC, IVEC, MAT, MODEL, MODEL_TYPES,
                   VEC, Component, Field, FieldStruct, UPDATABLE_COMMON, opt)


class ConvolutionModel(FieldStruct):
    """Geometry of a TimeHeightConvolution: filters, heights, (time, height) offsets."""
    TYPE = "ConvolutionModel"
    SCHEMA = (Field("<NumFiltersIn>", INT), Field("<NumFiltersOut>", INT),
              Field("<HeightIn>", INT), Field("<HeightOut>", INT),
              Field("<HeightSubsampleOut>", INT), Field("<Offsets>", IPVEC),
              Field("<RequiredTimeOffsets>", IVEC))

    def copy(self) -> "ConvolutionModel":
        return ConvolutionModel(list(self.fields), self.end_token)


MODEL_TYPES["<Model>"] = ConvolutionModel


class TimeHeightConvolutionComponent(UpdatableComponent):
    """2-D convolution over (time, height) with num_filters channels."""
    TYPE = "TimeHeightConvolutionComponent"
    SCHEMA = (opt("<LearningRateFactor>", F32), opt("<IsGradient>", BOOL),
              opt("<MaxChange>", F32), opt("<L2Regularize>", F32), opt("<LearningRate>", F32),
              Field("<Model>", MODEL), Field("<LinearParams>", MAT), Field("<BiasParams>", VEC),
              Field("<MaxMemoryMb>", F32), Field("<UseNaturalGradient>", BOOL),
              Field("<NumMinibatchesHistory>", F32), Field("<AlphaInOut>", F32X2),
              Field("<RankInOut>", INT2))

    def copy(self):
        return type(self)([(t, v.copy() if t == "<Model>" else v) for t, v in self.fields],
                          self.end_token)

    @property
    def model(self) -> ConvolutionModel:
        return self["<Model>"]

    @property
    def input_dim(self) -> int:
        return self.model["<NumFiltersIn>"] * self.model["<HeightIn>"]

    @property
    def output_dim(self) -> int:
        return self.model["<NumFiltersOut>"] * self.model["<HeightOut>"]

    @property
    def num_parameters(self) -> int:
        return self["<LinearParams>"].size + self["<BiasParams>"].size

    def computable(self, t: np.ndarray, inp: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        ok = np.ones(t.shape, dtype=bool)
        for off in sorted(set(int(x) for x in self.model["<RequiredTimeOffsets>"])):
            ok &= inp(t + off)
        return ok


class ConvolutionComponent(UpdatableComponent):
    """The older 1-D/2-D convolution over a frame's (x, y, z) layout."""
    TYPE = "ConvolutionComponent"
    SCHEMA = UPDATABLE_COMMON + (
        Field("<InputXDim>", INT), Field("<InputYDim>", INT), Field("<InputZDim>", INT),
        Field("<FiltXDim>", INT), Field("<FiltYDim>", INT), Field("<FiltXStep>", INT),
        Field("<FiltYStep>", INT), Field("<InputVectorization>", INT),
        Field("<FilterParams>", MAT), Field("<BiasParams>", VEC), Field("<IsGradient>", BOOL))

    @property
    def input_dim(self) -> int:
        return self["<InputXDim>"] * self["<InputYDim>"] * self["<InputZDim>"]

    @property
    def output_dim(self) -> int:
        nx = 1 + (self["<InputXDim>"] - self["<FiltXDim>"]) // self["<FiltXStep>"]
        ny = 1 + (self["<InputYDim>"] - self["<FiltYDim>"]) // self["<FiltYStep>"]
        return nx * ny * self["<FilterParams>"].shape[0]

    @property
    def num_parameters(self) -> int:
        return self["<FilterParams>"].size + self["<BiasParams>"].size


class MaxpoolingComponent(Component):
    """Max pooling over a frame's (x, y, z) layout."""
    TYPE = "MaxpoolingComponent"
    SCHEMA = tuple(Field(f"<{n}>", INT) for n in (
        "InputXDim", "InputYDim", "InputZDim", "PoolXSize", "PoolYSize", "PoolZSize",
        "PoolXStep", "PoolYStep", "PoolZStep"))

    @property
    def input_dim(self) -> int:
        return self["<InputXDim>"] * self["<InputYDim>"] * self["<InputZDim>"]

    @property
    def output_dim(self) -> int:
        n = 1
        for a in "XYZ":
            n *= 1 + (self[f"<Input{a}Dim>"] - self[f"<Pool{a}Size>"]) // self[f"<Pool{a}Step>"]
        return n


class LstmNonlinearityComponent(UpdatableComponent):
    """The LSTM cell nonlinearity: input (i, f, o, g, c_prev) -> (c, m)."""
    TYPE = "LstmNonlinearityComponent"
    SCHEMA = UPDATABLE_COMMON + (
        Field("<Params>", MAT), Field("<ValueAvg>", MAT), Field("<DerivAvg>", MAT),
        Field("<SelfRepairConfig>", VEC), Field("<SelfRepairProb>", VEC),
        opt("<UseDropout>", BOOL), Field("<Count>", F64))

    @property
    def cell_dim(self) -> int:
        return self["<Params>"].shape[1]

    @property
    def input_dim(self) -> int:
        return 5 * self.cell_dim + (3 if self.get("<UseDropout>", False) else 0)

    @property
    def output_dim(self) -> int:
        return 2 * self.cell_dim

    @property
    def num_parameters(self) -> int:
        return self["<Params>"].size


class GruNonlinearityComponent(UpdatableComponent):
    """The (projected) GRU cell nonlinearity."""
    TYPE = "GruNonlinearityComponent"
    SCHEMA = UPDATABLE_COMMON + (
        Field("<CellDim>", INT), Field("<RecurrentDim>", INT), Field("<w_h>", MAT),
        Field("<ValueAvg>", VEC), Field("<DerivAvg>", VEC), Field("<SelfRepairTotal>", F64),
        Field("<Count>", F64), Field("<SelfRepairThreshold>", F32),
        Field("<SelfRepairScale>", F32), Field("<Alpha>", F32), Field("<RankInOut>", INT2),
        Field("<UpdatePeriod>", INT))

    @property
    def input_dim(self) -> int:
        c, r = self["<CellDim>"], self["<RecurrentDim>"]
        return 4 * c if r == c else 3 * c + 2 * r

    @property
    def output_dim(self) -> int:
        return 2 * self["<CellDim>"]

    @property
    def num_parameters(self) -> int:
        return self["<w_h>"].size


class OutputGruNonlinearityComponent(UpdatableComponent):
    """The output-GRU cell nonlinearity."""
    TYPE = "OutputGruNonlinearityComponent"
    SCHEMA = UPDATABLE_COMMON + (
        Field("<CellDim>", INT), Field("<w_h>", VEC), Field("<ValueAvg>", VEC),
        Field("<DerivAvg>", VEC), Field("<SelfRepairTotal>", F64), Field("<Count>", F64),
        Field("<SelfRepairThreshold>", F32), Field("<SelfRepairScale>", F32),
        Field("<Alpha>", F32), Field("<Rank>", INT), Field("<UpdatePeriod>", INT))

    @property
    def input_dim(self) -> int:
        return 3 * self["<CellDim>"]

    @property
    def output_dim(self) -> int:
        return 2 * self["<CellDim>"]

    @property
    def num_parameters(self) -> int:
        return self["<w_h>"].size
