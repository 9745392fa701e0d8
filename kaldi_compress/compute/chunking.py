"""Whole-utterance evaluation in chunks, exactly as Kaldi's ``nnet3-compute``.

With frame-subsampling factor s, an utterance of T frames has ceil(T/s) output
rows.  Chunks cover ``frames_per_chunk / s`` output rows each (frames_per_chunk is
first raised to a multiple of lcm(s, network modulus)).  A chunk whose outputs are
frames f0, f0+s, ..., f1 reads input frames f0 - L .. f1 + R, where L/R are the
network's context plus --extra-left/right-context (replaced by
--extra-left-context-initial for the first chunk and --extra-right-context-final
for the last one when those are >= 0); frames outside the utterance repeat its
first/last frame.  With online i-vectors (one row per ``online_ivector_period``
frames), a chunk uses the row of frame f0 + (f1 - f0) // 2 (the last row if the
matrix is shorter, by at most 50 frames).

Chunks of the same shape are evaluated together as one batch.  When an output
frame's value depends only on the input frames within the network's context of it
(:attr:`.plan.Graph.fixed_window`), a chunk with fewer output rows (an utterance's
last) is evaluated at the full chunk size with its extra rows dropped: the same
values, and one chunk shape instead of several.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import KaldiCompressError
from ..nnet3 import Nnet
from .forward import NnetForward
from .layers.base import onednn_products
from .plan import Geometry
from .prefix import InputPrefix


@dataclass
class ComputeOptions:
    """nnet3-compute's chunking options (same names and defaults)."""
    frame_subsampling_factor: int = 1
    frames_per_chunk: int = 50
    extra_left_context: int = 0
    extra_right_context: int = 0
    extra_left_context_initial: int = -1
    extra_right_context_final: int = -1
    online_ivector_period: int = 0
    max_batch_chunks: int = 64

    def check(self) -> None:
        if self.frame_subsampling_factor < 1 or self.frames_per_chunk < 1:
            raise KaldiCompressError("--frame-subsampling-factor and --frames-per-chunk "
                                     "must be > 0")
        if self.extra_left_context < 0 or self.extra_right_context < 0:
            raise KaldiCompressError("--extra-left-context and --extra-right-context "
                                     "must be >= 0")


@dataclass(frozen=True)
class Chunk:
    first_output: int      # output frame of the chunk's first row (an input-frame index)
    num_outputs: int       # rows (subsampled frames)
    left: int              # input frames before first_output
    right: int             # input frames after the last output frame


class SimpleComputer:
    """Runs a simple network (input [+ ivector] -> output) over utterances."""

    def __init__(self, nnet: Nnet, options: ComputeOptions | None = None,
                 forward: NnetForward | None = None):
        self.opts = options or ComputeOptions()
        self.opts.check()
        ctx = nnet.compute_context()
        if ctx is None:
            raise KaldiCompressError("not a simple network: nnet3-compute needs an 'input' "
                                     "node, an 'output' node and optionally 'ivector'")
        self.context = ctx
        self.forward = forward or NnetForward(nnet)
        # the first linear layers once per utterance frame (not with an observer)
        self.prefix = InputPrefix.find(self.forward)
        s = self.opts.frame_subsampling_factor
        n = math.lcm(s, nnet.modulus())
        self.frames_per_chunk = n * -(-self.opts.frames_per_chunk // n)

    def chunks(self, num_frames: int) -> list[Chunk]:
        """The chunks nnet3-compute evaluates for an utterance of ``num_frames``."""
        o, s = self.opts, self.opts.frame_subsampling_factor
        total = -(-num_frames // s)
        per_chunk = self.frames_per_chunk // s
        out = []
        for start in range(0, total, per_chunk):
            n = min(total - start, per_chunk)
            left = o.extra_left_context
            right = o.extra_right_context
            if start == 0 and o.extra_left_context_initial >= 0:
                left = o.extra_left_context_initial
            if start + n == total and o.extra_right_context_final >= 0:
                right = o.extra_right_context_final
            out.append(Chunk(start * s, n, self.context.left + left, self.context.right + right))
        return out

    def ivector_row(self, chunk: Chunk, ivectors: np.ndarray) -> int:
        """The online i-vector row a chunk reads: its middle output frame's."""
        period = self.opts.online_ivector_period
        last = chunk.first_output + (chunk.num_outputs - 1) * self.opts.frame_subsampling_factor
        frame = chunk.first_output + (last - chunk.first_output) // 2
        row = frame // period
        if row >= len(ivectors):
            if (row - (len(ivectors) - 1)) * period > 50:
                raise KaldiCompressError(
                    f"no i-vector for frame {frame}: only {len(ivectors)} rows with "
                    f"--online-ivector-period={period} (mismatched period?)")
            row = len(ivectors) - 1
        return row

    def check(self, feats: np.ndarray, ivectors: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """float32 features and i-vectors of one utterance, checked against the network."""
        feats = np.asarray(feats, dtype=np.float32)
        if feats.ndim != 2 or len(feats) == 0:
            raise KaldiCompressError("features must be a non-empty matrix")
        fwd = self.forward
        if fwd.input_dim is not None and feats.shape[1] != fwd.input_dim:
            raise KaldiCompressError(f"the network expects input features of dimension "
                                     f"{fwd.input_dim}, got {feats.shape[1]}")
        if (fwd.ivector_dim is None) != (ivectors is None):
            raise KaldiCompressError(
                "the network takes i-vectors but none were given" if ivectors is None
                else "i-vectors were given but the network has no 'ivector' input")
        if ivectors is not None:
            ivectors = np.asarray(ivectors, dtype=np.float32)
            if self.opts.online_ivector_period <= 0:
                raise KaldiCompressError("online i-vectors need --online-ivector-period > 0")
            if ivectors.ndim != 2 or len(ivectors) == 0 or ivectors.shape[1] != fwd.ivector_dim:
                raise KaldiCompressError(f"the network expects i-vectors of dimension "
                                         f"{fwd.ivector_dim}")
        return feats, ivectors

    def geometry(self, chunk: Chunk, ivector: bool, min_outputs: int = 0) -> Geometry:
        """The chunk's shape (padded to ``min_outputs`` output rows)."""
        n = max(chunk.num_outputs, min_outputs)
        return Geometry(-chunk.left, chunk.left + (n - 1) * self.opts.frame_subsampling_factor
                        + chunk.right + 1, n, self.opts.frame_subsampling_factor, ivector)

    def compute(self, feats: np.ndarray, online_ivectors: np.ndarray | None = None) -> np.ndarray:
        """Network output for one utterance: (ceil(T / s), output_dim) float32."""
        return self.compute_many([(feats, online_ivectors)])[0]

    def compute_many(self, utterances: list[tuple[np.ndarray, np.ndarray | None]]
                     ) -> list[np.ndarray]:
        """Outputs of several utterances; same-shaped chunks of all of them are batched
        (undefined where ``forward.stop_after`` stopped the computation)."""
        s = self.opts.frame_subsampling_factor
        checked = [self.check(f, i) for f, i in utterances]
        outs = [np.empty((-(-len(f) // s), self.forward.output_dim), dtype=np.float32)
                for f, _ in checked]
        plain = self.forward.observer is None     # no observer: shortcuts allowed
        full = self.frames_per_chunk // s if plain and self.forward.graph.fixed_window else 0
        groups: dict[Geometry, list[tuple[int, Chunk]]] = {}
        for u, (feats, ivectors) in enumerate(checked):
            for c in self.chunks(len(feats)):
                groups.setdefault(self.geometry(c, ivectors is not None, full), []).append((u, c))
        prefix = self.prefix if plain else None
        with torch.inference_mode(), onednn_products() if plain else nullcontext():
            if prefix is not None:
                # per utterance, the input frames its chunks read, widened so that every
                # row t whose frames t + k lie in them is there
                m = int(np.abs(prefix.offsets).max())
                spans = [[np.inf, -np.inf] for _ in checked]
                for geom, members in groups.items():
                    for u, c in members:
                        start = c.first_output + geom.input_start
                        spans[u][0] = min(spans[u][0], start - m)
                        spans[u][1] = max(spans[u][1], start + geom.num_inputs + m)
                spans = [(int(a), int(b)) for a, b in spans]
                pre = prefix.frames([f for f, _ in checked], spans)
                # row of utterance u's frame t in pre: origin[u] + t
                origin = np.cumsum([0] + [b - a for a, b in spans])[:-1] - [a for a, _ in spans]
            for geom, members in groups.items():
                for i in range(0, len(members), self.opts.max_batch_chunks):
                    batch = members[i:i + self.opts.max_batch_chunks]
                    ivec = None
                    if geom.ivector:
                        ivec = torch.from_numpy(np.stack([
                            checked[u][1][self.ivector_row(c, checked[u][1])] for u, c in batch]))
                    if prefix is not None:
                        times = self.forward.plan(geom).times[prefix.node]
                        rows = np.array([origin[u] + c.first_output for u, c in batch])
                        index = torch.from_numpy((rows[:, None] + times[None, :]).ravel())
                        given = pre.index_select(0, index).view(len(batch), len(times), -1)
                        given += prefix.chunk_bias(ivec)[:, None, :]
                        y = self.forward(None, ivec, geom, {prefix.node: given})
                    else:
                        x = torch.from_numpy(np.stack([checked[u][0][np.clip(
                            np.arange(geom.num_inputs) + c.first_output - c.left,
                            0, len(checked[u][0]) - 1)] for u, c in batch]))
                        y = self.forward(x, ivec, geom)
                    if y is None:          # stopped early: the outputs stay undefined
                        continue
                    for (u, c), rows in zip(batch, y.numpy()):
                        first = c.first_output // s
                        outs[u][first:first + c.num_outputs] = rows[:c.num_outputs]
        return outs
