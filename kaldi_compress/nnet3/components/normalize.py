"""Normalization components (nnet-normalize-component.cc)."""
from __future__ import annotations

from .base import BOOL, F32, F64, INT, VEC, Component, DimComponent, Field, opt


class NormalizeComponent(Component):
    """y = x * target_rms / rms(x) per block; optionally appends log(stddev)."""
    TYPE = "NormalizeComponent"
    SCHEMA = (opt("<Dim>", INT), opt("<InputDim>", INT), opt("<BlockDim>", INT),
              opt("<TargetRms>", F32), opt("<AddLogStddev>", BOOL),
              opt("<ValueAvg>", VEC), opt("<DerivAvg>", VEC), opt("<Count>", F64))

    @property
    def input_dim(self) -> int:
        return self.get("<InputDim>", self.get("<Dim>"))

    @property
    def block_dim(self) -> int:
        return self.get("<BlockDim>", self.input_dim)

    @property
    def output_dim(self) -> int:
        d = self.input_dim
        return d + (d // self.block_dim if self.get("<AddLogStddev>", False) else 0)


class BatchNormComponent(DimComponent):
    """Test mode: y = (x - mean) * target_rms / sqrt(max(var, 0) + epsilon), per block column."""
    TYPE = "BatchNormComponent"
    SCHEMA = (Field("<Dim>", INT), Field("<BlockDim>", INT), Field("<Epsilon>", F32),
              Field("<TargetRms>", F32), Field("<TestMode>", BOOL), Field("<Count>", F64),
              Field("<StatsMean>", VEC), Field("<StatsVar>", VEC))
