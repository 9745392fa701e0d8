"""Affine-like components (nnet-simple-component.cc, nnet-tdnn-component.cc).

All compute y = W x (+ b) on (possibly spliced or blocked) inputs; W is stored
out x in, row-major, exactly as Kaldi's ``<LinearParams>``/``<Params>``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .base import (BOOL, F32, F64, INT, INT2, F32X2, IVEC, MAT, VEC, Component, Field,
                   UPDATABLE_COMMON, opt)


class UpdatableComponent(Component):
    UPDATABLE = True

    @property
    def learning_rate(self) -> float:
        return float(self.get("<LearningRate>", 0.001))

    def updatable_config(self) -> dict:
        """The UpdatableComponent settings Kaldi's SetUpdatableConfigs copies."""
        return {t: self.get(t) for t in ("<LearningRateFactor>", "<IsGradient>", "<MaxChange>",
                                          "<L2Regularize>", "<LearningRate>")
                if self.has(t)}


class AffineComponent(UpdatableComponent):
    """y = W x + b."""
    TYPE = "AffineComponent"
    SCHEMA = UPDATABLE_COMMON + (
        Field("<LinearParams>", MAT), Field("<BiasParams>", VEC),
        opt("<IsGradient>", BOOL), opt("<OrthonormalConstraint>", F32))

    @property
    def linear_params(self) -> np.ndarray:
        return self["<LinearParams>"]

    @property
    def bias_params(self) -> np.ndarray:
        return self["<BiasParams>"]

    @property
    def input_dim(self) -> int:
        return self.linear_params.shape[1]

    @property
    def output_dim(self) -> int:
        return self.linear_params.shape[0]

    @property
    def num_parameters(self) -> int:
        return self.linear_params.size + self.bias_params.size


class NaturalGradientAffineComponent(AffineComponent):
    """AffineComponent trained with natural gradient (same forward)."""
    TYPE = "NaturalGradientAffineComponent"
    SCHEMA = UPDATABLE_COMMON + (
        Field("<LinearParams>", MAT), Field("<BiasParams>", VEC),
        Field("<RankIn>", INT), Field("<RankOut>", INT), opt("<OrthonormalConstraint>", F32),
        Field("<UpdatePeriod>", INT), Field("<NumSamplesHistory>", F32), Field("<Alpha>", F32),
        opt("<MaxChangePerSample>", F32), opt("<IsGradient>", BOOL),
        opt("<UpdateCount>", F64), opt("<ActiveScalingCount>", F64),
        opt("<MaxChangeScaleStats>", F64))
    # Kaldi accepts any token containing "NaturalGradientAffineComponent>" as the end.
    END_TOKENS = ("<NaturalGradientAffineComponent>",)

    @classmethod
    def create(cls, linear: np.ndarray, bias: np.ndarray, updatable: dict | None = None,
               rank_in: int = 20, rank_out: int = 80, update_period: int = 4,
               num_samples_history: float = 2000.0, alpha: float = 4.0,
               orthonormal_constraint: float = 0.0) -> "NaturalGradientAffineComponent":
        """As Kaldi's (matrix, bias) constructor: ranks 20/80, period 4, unless given."""
        values = {"<LearningRate>": 0.001, **(updatable or {})}
        values.update({"<LinearParams>": np.ascontiguousarray(linear, dtype=np.float32),
                       "<BiasParams>": np.ascontiguousarray(bias, dtype=np.float32),
                       "<RankIn>": rank_in, "<RankOut>": rank_out,
                       "<OrthonormalConstraint>": orthonormal_constraint or None,
                       "<UpdatePeriod>": update_period,
                       "<NumSamplesHistory>": num_samples_history, "<Alpha>": alpha})
        return cls.build(values)


class FixedAffineComponent(Component):
    """y = W x + b, not trained (e.g. the LDA transform)."""
    TYPE = "FixedAffineComponent"
    SCHEMA = (Field("<LinearParams>", MAT), Field("<BiasParams>", VEC))

    linear_params = AffineComponent.linear_params
    bias_params = AffineComponent.bias_params
    input_dim = AffineComponent.input_dim
    output_dim = AffineComponent.output_dim


class LinearComponent(UpdatableComponent):
    """y = W x (no bias)."""
    TYPE = "LinearComponent"
    SCHEMA = UPDATABLE_COMMON + (
        Field("<Params>", MAT), opt("<OrthonormalConstraint>", F32),
        Field("<UseNaturalGradient>", BOOL), Field("<RankInOut>", INT2),
        Field("<Alpha>", F32), Field("<NumSamplesHistory>", F32), Field("<UpdatePeriod>", INT))

    @property
    def linear_params(self) -> np.ndarray:
        return self["<Params>"]

    @property
    def input_dim(self) -> int:
        return self.linear_params.shape[1]

    @property
    def output_dim(self) -> int:
        return self.linear_params.shape[0]

    @property
    def num_parameters(self) -> int:
        return self.linear_params.size

    @classmethod
    def create(cls, params: np.ndarray, updatable: dict | None = None,
               rank_in: int = 40, rank_out: int = 80, orthonormal_constraint: float = 0.0,
               use_natural_gradient: bool = True, alpha: float = 4.0,
               num_samples_history: float = 2000.0, update_period: int = 4) -> "LinearComponent":
        """As Kaldi's matrix-only constructor (ranks 40/80, period 4), unless given."""
        values = {"<LearningRate>": 0.001, **(updatable or {})}
        values.update({"<Params>": np.ascontiguousarray(params, dtype=np.float32),
                       "<OrthonormalConstraint>": orthonormal_constraint or None,
                       "<UseNaturalGradient>": use_natural_gradient,
                       "<RankInOut>": (rank_in, rank_out), "<Alpha>": alpha,
                       "<NumSamplesHistory>": num_samples_history,
                       "<UpdatePeriod>": update_period})
        return cls.build(values)


class TdnnComponent(UpdatableComponent):
    """y(t) = b + sum_k W[:, k*in:(k+1)*in] x(t + time_offsets[k])."""
    TYPE = "TdnnComponent"
    SCHEMA = UPDATABLE_COMMON + (
        Field("<TimeOffsets>", IVEC), Field("<LinearParams>", MAT), Field("<BiasParams>", VEC),
        Field("<OrthonormalConstraint>", F32), Field("<UseNaturalGradient>", BOOL),
        Field("<NumSamplesHistory>", F32), opt("<AlphaInOut>", F32X2), opt("<Alpha>", F32),
        Field("<RankInOut>", INT2))

    @property
    def time_offsets(self) -> list[int]:
        return [int(x) for x in self["<TimeOffsets>"]]

    @property
    def linear_params(self) -> np.ndarray:
        return self["<LinearParams>"]

    @property
    def bias_params(self) -> np.ndarray:
        return self["<BiasParams>"]

    @property
    def input_dim(self) -> int:
        return self.linear_params.shape[1] // max(1, len(self.time_offsets))

    @property
    def output_dim(self) -> int:
        return self.linear_params.shape[0]

    @property
    def num_parameters(self) -> int:
        return self.linear_params.size + self.bias_params.size

    def computable(self, t: np.ndarray, inp: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        ok = np.ones(t.shape, dtype=bool)
        for off in self.time_offsets:
            ok &= inp(t + off)
        return ok

    @classmethod
    def create(cls, params: np.ndarray, bias: np.ndarray | None, time_offsets,
               updatable: dict | None = None, orthonormal_constraint: float = 0.0,
               use_natural_gradient: bool = True, num_samples_history: float = 2000.0,
               alpha_in_out=(4.0, 4.0), rank_in_out=None) -> "TdnnComponent":
        """A TdnnComponent; ranks default as InitFromConfig: min(20,(in*K+1)/2), min(80,(out+1)/2)."""
        rows, cols = params.shape
        if rank_in_out is None:
            rank_in_out = (min(20, (cols + 1) // 2), min(80, (rows + 1) // 2))
        values = {"<LearningRate>": 0.001, **(updatable or {})}
        values.update({
            "<TimeOffsets>": np.asarray(time_offsets, dtype=np.int32),
            "<LinearParams>": np.ascontiguousarray(params, dtype=np.float32),
            "<BiasParams>": (np.zeros(0, np.float32) if bias is None
                             else np.ascontiguousarray(bias, dtype=np.float32)),
            "<OrthonormalConstraint>": orthonormal_constraint,
            "<UseNaturalGradient>": use_natural_gradient,
            "<NumSamplesHistory>": num_samples_history, "<AlphaInOut>": tuple(alpha_in_out),
            "<RankInOut>": tuple(rank_in_out)})
        return cls.build(values)


class BlockAffineComponent(UpdatableComponent):
    """Block-diagonal affine: input split into NumBlocks parts, each its own W rows."""
    TYPE = "BlockAffineComponent"
    SCHEMA = UPDATABLE_COMMON + (
        Field("<NumBlocks>", INT), Field("<LinearParams>", MAT), Field("<BiasParams>", VEC),
        opt("<IsGradient>", BOOL))

    linear_params = AffineComponent.linear_params
    bias_params = AffineComponent.bias_params
    num_parameters = AffineComponent.num_parameters

    @property
    def input_dim(self) -> int:
        return self.linear_params.shape[1] * self["<NumBlocks>"]

    @property
    def output_dim(self) -> int:
        return self.linear_params.shape[0]


class RepeatedAffineComponent(UpdatableComponent):
    """The same (W, b) applied to each of NumRepeats contiguous input blocks."""
    TYPE = "RepeatedAffineComponent"
    SCHEMA = UPDATABLE_COMMON + (
        Field("<NumRepeats>", INT), Field("<LinearParams>", MAT), Field("<BiasParams>", VEC),
        opt("<IsGradient>", BOOL))

    linear_params = AffineComponent.linear_params
    bias_params = AffineComponent.bias_params
    num_parameters = AffineComponent.num_parameters

    @property
    def num_repeats(self) -> int:
        return self["<NumRepeats>"]

    @property
    def input_dim(self) -> int:
        return self.linear_params.shape[1] * self.num_repeats

    @property
    def output_dim(self) -> int:
        return self.linear_params.shape[0] * self.num_repeats

    @classmethod
    def create(cls, linear: np.ndarray, bias: np.ndarray, num_repeats: int,
               updatable: dict | None = None):
        values = {"<LearningRate>": 0.001, **(updatable or {})}
        values.update({"<NumRepeats>": num_repeats,
                       "<LinearParams>": np.ascontiguousarray(linear, dtype=np.float32),
                       "<BiasParams>": np.ascontiguousarray(bias, dtype=np.float32)})
        return cls.build(values)


class NaturalGradientRepeatedAffineComponent(RepeatedAffineComponent):
    TYPE = "NaturalGradientRepeatedAffineComponent"
