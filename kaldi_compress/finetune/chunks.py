"""Training examples: the chunks decoding evaluates, with the teacher's outputs.

Chunks are cut as nnet3-compute cuts them (:class:`SimpleComputer`: frames per
chunk raised to a multiple of the subsampling factor s, the network's left/right
context around the outputs, input frames outside the utterance repeating its
first/last frame, the i-vector row of the chunk's middle output frame).  For
training, every chunk has the full geometry, so all of them batch together: the
utterance's last chunk is extended past its end with repeated last frames, and
its extra output rows are masked out of the loss.  A time-invariant network's
output at a frame depends only on the input frames around it, so the unmasked
rows equal what decoding computes.

With ``shifts`` other than (0,), chunks are also cut with their output frames
moved by 1 .. s-1 frames (outputs at t = k s + shift): more distinct frames for
the same audio.

Teacher targets (the teacher network's outputs, test mode) are computed once and
kept as float16 (in memory here; :mod:`.stream` computes them batch by batch).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import KaldiCompressError
from ..compute.chunking import Chunk, ComputeOptions, SimpleComputer
from ..compute.forward import NnetForward
from ..compute.plan import Geometry
from ..nnet3 import Nnet
from .data import Corpus


@dataclass
class ChunkSet:
    """N same-geometry chunks over the concatenated frames of a corpus."""
    geometry: Geometry
    frames: torch.Tensor              # (sum of T, feat_dim): all utterances, one after another
    spans: torch.Tensor               # (N, 3) int64: utterance's first row in frames, its T,
    #                                   and the chunk's first input frame (may be < 0)
    ivectors: torch.Tensor | None     # (N, ivector_dim)
    mask: torch.Tensor                # (N, num_outputs) bool: output row inside the utterance
    targets: torch.Tensor | None = None   # (N, num_outputs, output_dim) float16

    def __len__(self) -> int:
        return len(self.spans)

    @property
    def num_outputs(self) -> int:
        """Output rows that count (inside their utterance)."""
        return int(self.mask.sum())

    def inputs(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features (B, T_in, feat_dim) and i-vectors (B, ivector_dim) of chunks ``idx``."""
        start, length, first = self.spans[idx].unbind(1)
        t = torch.arange(self.geometry.num_inputs)[None, :] + first[:, None]
        t = torch.minimum(t.clamp_min(0), (length - 1)[:, None])
        feats = self.frames[start[:, None] + t]
        return feats, None if self.ivectors is None else self.ivectors[idx]


def _context_options(teacher: Nnet, student: Nnet, fsf: int, frames_per_chunk: int,
                     ivector_period: int) -> ComputeOptions:
    """Chunk options giving both networks the context they need."""
    ctx = {}
    for role, net in (("teacher", teacher), ("student", student)):
        ctx[role] = net.compute_context()
        if ctx[role] is None:
            raise KaldiCompressError(f"the {role} is not a simple network (needs an 'input' "
                                     "node, an 'output' node and optionally 'ivector')")
    return ComputeOptions(
        frame_subsampling_factor=fsf, frames_per_chunk=frames_per_chunk,
        extra_left_context=max(0, ctx["student"].left - ctx["teacher"].left),
        extra_right_context=max(0, ctx["student"].right - ctx["teacher"].right),
        online_ivector_period=ivector_period)


class Chunker:
    """Cuts utterances into same-geometry chunks giving teacher and student the context
    they need; ``computer`` is the teacher's (its ``forward`` computes the targets)."""

    def __init__(self, teacher: Nnet, student: Nnet, frame_subsampling_factor: int,
                 frames_per_chunk: int = 51, shifts: tuple[int, ...] = (0,),
                 ivector_period: int = 0):
        s = frame_subsampling_factor
        if any(not 0 <= k < s for k in shifts):
            raise KaldiCompressError(f"frame shifts must lie in 0..{s - 1}")
        self.shifts = shifts
        self.computer = SimpleComputer(teacher, _context_options(
            teacher, student, s, frames_per_chunk, ivector_period))
        fwd = self.computer.forward
        self.per_chunk = self.computer.frames_per_chunk // s
        first = self.computer.chunks(1)[0]
        self.left = first.left
        self.geometry = self.computer.geometry(first, fwd.ivector_dim is not None,
                                               self.per_chunk)

    def count(self, num_frames: int) -> int:
        """How many chunks an utterance of ``num_frames`` frames gives."""
        return sum(len(self.computer.chunks(num_frames - k)) for k in self.shifts
                   if k < num_frames)

    def cut(self, utterances) -> ChunkSet:
        """The chunks of the utterances (no targets yet)."""
        computer, per_chunk, left = self.computer, self.per_chunk, self.left
        spans, ivecs, masks, frames = [], [], [], []
        offset = 0
        for u in utterances:
            feats, iv = computer.check(u.feats, u.ivectors)   # dims, i-vector presence
            n = len(feats)
            for shift in self.shifts:
                if shift >= n:
                    continue
                for c in computer.chunks(n - shift):
                    c = Chunk(c.first_output + shift, c.num_outputs, c.left, c.right)
                    spans.append((offset, n, c.first_output - left))
                    masks.append(np.arange(per_chunk) < c.num_outputs)
                    if iv is not None:
                        ivecs.append(iv[computer.ivector_row(c, iv)])
            frames.append(feats)
            offset += n
        if not spans:
            raise KaldiCompressError("no training data")
        return ChunkSet(self.geometry, torch.from_numpy(np.concatenate(frames)),
                        torch.tensor(spans, dtype=torch.int64),
                        torch.from_numpy(np.stack(ivecs)) if ivecs else None,
                        torch.from_numpy(np.stack(masks)))


def make_chunks(corpus: Corpus, teacher: Nnet, student: Nnet, frame_subsampling_factor: int,
                frames_per_chunk: int = 51, shifts: tuple[int, ...] = (0,)
                ) -> tuple[ChunkSet, SimpleComputer]:
    """The training chunks of a corpus, and the teacher's computer (for its targets)."""
    chunker = Chunker(teacher, student, frame_subsampling_factor, frames_per_chunk, shifts,
                      corpus.ivector_period)
    return chunker.cut(corpus.utterances), chunker.computer


def to_device(tensors: tuple, device: torch.device) -> tuple:
    """The tensors (or Nones) on ``device``; on the device already, the same objects."""
    return tuple(None if t is None else t.to(device) for t in tensors)


def network_outputs(forward: NnetForward, chunks: ChunkSet, batch_size: int = 64,
                    progress: bool = False, desc: str = "teacher",
                    device: torch.device | None = None) -> torch.Tensor:
    """A network's outputs on every chunk, (N, num_outputs, output_dim) float16 on the
    CPU (computed on ``device``, where the network is: default the CPU)."""
    out = torch.empty(len(chunks), chunks.geometry.num_outputs, forward.output_dim,
                      dtype=torch.float16)
    starts = range(0, len(chunks), batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc=desc, unit="batch", file=sys.stderr, leave=False)
    with torch.no_grad():
        for i in starts:
            idx = torch.arange(i, min(i + batch_size, len(chunks)))
            feats, ivecs = chunks.inputs(idx)
            if device is not None:
                feats, ivecs = to_device((feats, ivecs), device)
            out[idx] = forward(feats, ivecs, chunks.geometry).to(torch.float16).cpu()
    return out
