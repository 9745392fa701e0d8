"""Kaldi tables too large for memory: chunks read as training goes, the teacher's
targets computed batch by batch.

A :class:`ChunkStream` holds only what it needs to plan the epochs: every usable
utterance's key and length (one pass over the table at the start; for an ``scp:``
table only the matrix headers are read) and, for ``scp:`` i-vectors, where each
one is (an ``ark:`` i-vector table is read into memory: a tenth of the frames).
An epoch is one pass over the table:

1. utterances are read one at a time -- for ``scp:`` in a seeded random order
   (random access into the archives), for ``ark:`` (a file or a pipe such as
   ``ark:apply-cmvn-online ... |``) in table order;
2. each is cut into chunks exactly as :class:`.chunks.Chunker` cuts it for the
   in-memory path (same geometry, masks and i-vector rows);
3. the chunks pass through a shuffle buffer of ``buffer`` chunks, as Kaldi's
   ``nnet3-shuffle-egs --buffer-size``: once it is full, every new chunk replaces
   a random one, which goes out; at the end the rest go out in a random order.  A
   table of at most ``buffer`` chunks thus comes out as one permutation, the one
   the in-memory path draws for the same seed and epoch;
4. the stream is cut into global batches of ``batch_size`` x processes chunks;
   each process takes its part, and the teacher computes its targets (float16,
   as the in-memory path keeps them) on the device.

Memory: the buffer's chunks (their input frames, about 10-20 kB each), one
utterance and one batch, whatever the table's length.  Resuming mid-epoch replays
the epoch's reading and shuffling up to the step without computing anything.
Every process reads the whole table (to draw the same shuffle); reading features
costs little next to the two networks' forward passes.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterator

import torch

from ..errors import KaldiCompressError
from ..io.tables import (ivector_reader, matrix_rows, read_matrices, read_matrix,
                         scp_entries, usable_utterances)
from .chunks import Chunker, to_device
from .data import Utterance
from .options import DEFAULT_SHUFFLE_BUFFER
from .parallel import World


@dataclass
class Batch:
    """One process's chunks of a step, with the teacher's outputs."""
    feats: torch.Tensor               # (B, num_inputs, feat_dim)
    ivectors: torch.Tensor | None     # (B, ivector_dim)
    mask: torch.Tensor                # (B, num_outputs) bool
    targets: torch.Tensor             # (B, num_outputs, output_dim) float16, on the device

    def __len__(self) -> int:
        return len(self.feats)


def shuffled(items, size: int, g: torch.Generator) -> Iterator:
    """``items`` through a shuffle buffer of ``size`` (see the module docstring)."""
    buf: list = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        i = int(torch.randint(size, (1,), generator=g))
        yield buf[i]
        buf[i] = item
    for i in torch.randperm(len(buf), generator=g).tolist():
        yield buf[i]


class ChunkStream:
    """The chunks of a Kaldi feature table, an epoch at a time (module docstring)."""

    def __init__(self, feats_rspec: str, chunker: Chunker, teacher, ivectors_rspec: str = "",
                 ivector_period: int = 0, buffer: int = DEFAULT_SHUFFLE_BUFFER, seed: int = 0,
                 device: torch.device = torch.device("cpu")):
        if buffer < 1:
            raise KaldiCompressError("--shuffle-buffer must be >= 1")
        self.rspec, self.chunker, self.teacher = feats_rspec, chunker, teacher
        self.buffer, self.seed, self.device = buffer, seed, device
        self.ivectors = ivector_reader(ivectors_rspec, ivector_period)
        self.ivector_period = ivector_period if ivectors_rspec else 0
        entries = scp_entries(feats_rspec)
        if entries is None:
            items = ((k, len(m), len(m)) for k, m in read_matrices(feats_rspec))
        else:
            items = ((k, n, (n, rx)) for k, rx in entries for n in (matrix_rows(rx),))
        kept = list(usable_utterances(items, self.ivectors, feats_rspec))
        self.keys = [k for k, _ in kept]
        self.lengths = [v if entries is None else v[0] for _, v in kept]
        self.where = None if entries is None else [v[1] for _, v in kept]
        self.geometry = chunker.geometry
        self.output_dim = teacher.output_dim
        self.num_chunks = sum(chunker.count(n) for n in self.lengths)
        s = chunker.computer.opts.frame_subsampling_factor
        self.num_outputs = sum(-(-(n - k) // s) for n in self.lengths for k in chunker.shifts
                               if k < n)
        next(self.chunks(0))      # a wrong feature or i-vector dimension is an error now

    def __len__(self) -> int:
        return self.num_chunks

    @property
    def num_frames(self) -> int:
        return sum(self.lengths)

    def fingerprint(self) -> list:
        """Chunk and output counts and a checksum of the keys and lengths."""
        listing = "".join(f"{k} {n}\n" for k, n in zip(self.keys, self.lengths))
        return [self.num_chunks, self.num_outputs, zlib.crc32(listing.encode())]

    # --- one epoch ------------------------------------------------------------------------
    def utterances(self, epoch: int) -> Iterator[Utterance]:
        """The usable utterances, read one at a time, in the epoch's order."""
        iv = self.ivectors
        if self.where is None:
            kept = set(self.keys)
            pairs = ((k, m) for k, m in read_matrices(self.rspec) if k in kept)
        else:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 7_777_777)
            order = torch.randperm(len(self.keys), generator=g).tolist()
            pairs = ((self.keys[i], read_matrix(self.where[i])) for i in order)
        for key, feats in pairs:
            yield Utterance(key, feats, None if iv is None else iv[key])

    def chunks(self, epoch: int) -> Iterator[tuple]:
        """(input frames, i-vector, mask) of every chunk, utterance by utterance."""
        for utt in self.utterances(epoch):
            cs = self.chunker.cut([utt])
            feats, ivecs = cs.inputs(torch.arange(len(cs)))
            for i in range(len(cs)):      # copies: a chunk must not hold its utterance
                yield (feats[i].clone(), None if ivecs is None else ivecs[i].clone(),
                       cs.mask[i].clone())

    def batches(self, epoch: int, first: int, batch_size: int,
                world: World = World()) -> Iterator[Batch | None]:
        """This process's batch of every step of the epoch from step ``first`` on (None
        when the last global batch leaves it nothing)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        size, lo = batch_size * world.size, batch_size * world.rank
        step, group = 0, []
        for chunk in shuffled(self.chunks(epoch), self.buffer, g):
            group.append(chunk)
            if len(group) == size:
                if step >= first:
                    yield self.batch(group[lo:lo + batch_size])
                step, group = step + 1, []
        if group and step >= first:
            yield self.batch(group[lo:lo + batch_size])

    def batch(self, chunks: list[tuple]) -> Batch | None:
        """Stacked chunks with the teacher's outputs on them."""
        if not chunks:
            return None
        feats = torch.stack([c[0] for c in chunks])
        ivecs = None if chunks[0][1] is None else torch.stack([c[1] for c in chunks])
        mask = torch.stack([c[2] for c in chunks])
        feats, ivecs = to_device((feats, ivecs), self.device)
        with torch.no_grad():
            targets = self.teacher(feats, ivecs, self.geometry).to(torch.float16)
        return Batch(feats, ivecs, mask, targets)
