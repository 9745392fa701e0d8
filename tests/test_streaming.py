"""Streaming Kaldi tables: a stream whose shuffle buffer holds the whole table is the
in-memory run; a smaller buffer still gives every chunk once per epoch with bounded
memory; scp tables are read lazily from their headers and archives; an interrupted
streamed run resumes to the same bytes."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from kaldi_compress.compute.forward import NnetForward
from kaldi_compress.errors import KaldiCompressError
from kaldi_compress.finetune import (Chunker, ChunkStream, Trainer, TrainOptions,
                                     network_outputs)
from kaldi_compress.finetune.stream import shuffled
from kaldi_compress.io.tables import matrix_rows, scp_entries
from kaldi_compress.nnet3 import read_model
from arks import write_ark_scp
from test_finetune import (OPTS, corpus, feats_args, nets, run_cli,  # noqa: F401 (fixtures)
                           run_interrupted, student_file, teacher_file)


def chunker(teacher_file, student_file, shifts=(0, 1, 2)) -> Chunker:
    return Chunker(read_model(str(teacher_file)).nnet, read_model(str(student_file)).nnet,
                   3, 51, shifts, 10)


def golden_stream(nets, cut: Chunker, buffer: int) -> ChunkStream:
    return ChunkStream(f"ark:{nets / 'feats_dim20.ark.txt'}", cut, cut.computer.forward,
                       f"ark:{nets / 'ivectors_m1.ark.txt'}", 10, buffer)


def test_shuffle_buffer_is_bounded_and_holding_all_is_one_permutation():
    g = torch.Generator().manual_seed(5)
    produced = []

    def items():
        for i in range(100):
            produced.append(i)
            yield i

    out = []
    for x in shuffled(items(), 8, g):
        assert len(produced) - len(out) <= 8 + 1      # held: the buffer and the new one
        out.append(x)
    assert sorted(out) == list(range(100)) and out != list(range(100))
    whole = list(shuffled(iter(range(30)), 30, torch.Generator().manual_seed(7)))
    assert whole == torch.randperm(30, generator=torch.Generator().manual_seed(7)).tolist()


def test_stream_holding_the_whole_table_is_the_in_memory_run(teacher_file, student_file, nets,
                                                             corpus):
    cut = chunker(teacher_file, student_file)
    stream = golden_stream(nets, cut, buffer=1000)
    memory = cut.cut(corpus.utterances)
    memory.targets = network_outputs(cut.computer.forward, memory)
    assert (len(stream), stream.num_outputs, stream.num_frames) == (
        len(memory), memory.num_outputs, corpus.num_frames) == (15, 202, 202)
    opts = TrainOptions(**OPTS)
    trainers = [Trainer(NnetForward(read_model(str(student_file)).nnet), c, opts)
                for c in (memory, stream)]
    for epoch in range(2):            # the same chunks, targets and masks in every step
        for idx, batch in zip(trainers[0].batches(epoch), stream.batches(epoch, 0, 2)):
            feats, ivecs = memory.inputs(idx)
            assert torch.equal(batch.feats, feats) and torch.equal(batch.ivectors, ivecs)
            assert torch.equal(batch.mask, memory.mask[idx])
            torch.testing.assert_close(batch.targets.float(), memory.targets[idx].float(),
                                       rtol=1e-3, atol=1e-3)
    for t in trainers:
        t.train()
    assert trainers[1].step == trainers[0].step == opts.epochs * 8
    assert [h.loss for h in trainers[1].history] == pytest.approx(
        [h.loss for h in trainers[0].history], rel=1e-4)
    for name, p in trainers[0].params.items():
        torch.testing.assert_close(trainers[1].params[name], p, rtol=1e-4, atol=1e-5)


def test_small_buffer_gives_every_chunk_once_and_resumes_mid_epoch(teacher_file, student_file,
                                                                   nets):
    stream = golden_stream(nets, chunker(teacher_file, student_file), buffer=3)
    epochs = [list(stream.batches(e, 0, 4)) for e in range(2)]
    for batches in epochs:
        assert [len(b) for b in batches] == [4, 4, 4, 3]
        assert int(sum(b.mask.sum() for b in batches)) == stream.num_outputs
    order = [torch.cat([b.feats.flatten(1).sum(1) for b in bs]) for bs in epochs]
    assert not torch.equal(order[0], order[1])                        # reshuffled
    assert torch.equal(order[0].sort().values, order[1].sort().values)  # the same chunks
    again = list(stream.batches(1, 2, 4))                               # from step 2
    assert all(torch.equal(a.feats, b.feats) and torch.equal(a.targets, b.targets)
               for a, b in zip(again, epochs[1][2:])) and len(again) == 2


def write_table(path, lengths, dim, seed=0, period=0) -> str:
    """An ark and its scp of random matrices (every ``period``-th row with a period)."""
    rng = np.random.default_rng(seed)
    mats = {f"utt{i:03d}": rng.normal(size=(-(-n // period) if period else n, dim)
                                      ).astype(np.float32) for i, n in enumerate(lengths)}
    return f"scp:{write_ark_scp(path.with_suffix('.ark'), mats)}"


def test_scp_table_streams_lazily_in_a_new_order_every_epoch(teacher_file, student_file,
                                                             tmp_path, monkeypatch):
    lengths = [37, 120, 64, 5, 90, 150]
    feats = write_table(tmp_path / "feats", lengths, 20)
    ivecs = write_table(tmp_path / "ivectors", lengths, 8, seed=1, period=10)
    assert [matrix_rows(rx) for _, rx in scp_entries(feats)] == lengths
    assert matrix_rows(scp_entries(feats)[1][1] + "[10:30]") == 20
    cut = chunker(teacher_file, student_file, shifts=(0,))
    reads = []
    from kaldi_compress.finetune import stream as stream_mod
    from kaldi_compress.io import tables as tables_mod
    real = stream_mod.read_matrix
    for module in (stream_mod, tables_mod):          # features; i-vectors by key
        monkeypatch.setattr(module, "read_matrix", lambda rx: reads.append(rx) or real(rx))
    stream = ChunkStream(feats, cut, cut.computer.forward, ivecs, 10, buffer=4, seed=3)
    assert stream.lengths == lengths and len(stream) == sum(cut.count(n) for n in lengths)
    assert len(reads) <= 2                   # planning read headers; the dims check one
    orders = []
    for epoch in range(2):
        reads.clear()
        n = sum(len(b) for b in stream.batches(epoch, 0, 3))
        assert n == len(stream) and len(reads) == 2 * len(lengths)    # feats + i-vectors
        orders.append([r for r in reads if "feats" in r])
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])
    with pytest.raises(KaldiCompressError, match="dimension 20, got 24"):
        ChunkStream(write_table(tmp_path / "wide", [50], 24), cut, cut.computer.forward,
                    ivecs, 10)


def test_streamed_cli_run_resumes_to_the_same_bytes(teacher_file, student_file, feats_args,
                                                    tmp_path, run_cli, monkeypatch):
    common = [f"--teacher={teacher_file}", *feats_args, "--epochs=2", "--batch-size=2",
              "--shuffle-buffer=4", str(student_file)]
    straight = tmp_path / "straight.raw"
    rc, err = run_cli(*common, str(straight))
    assert rc == 0, err
    assert "15 chunks per epoch, 202 outputs, streamed through a shuffle buffer of 4" in err
    assert "loss before training" not in err and "epoch 2/2" in err
    out = tmp_path / "out.raw"
    rc, err = run_interrupted(run_cli, monkeypatch, *common, str(out))
    assert rc == 130 and os.path.exists(f"{out}.ckpt")
    rc, err = run_cli(*common[:-1], "--resume", common[-1], str(out))
    assert rc == 0 and "resuming" in err, err
    assert out.read_bytes() == straight.read_bytes()
    rc, err = run_cli(*common[:-1], "--shuffle-buffer=0", common[-1], str(tmp_path / "x.raw"))
    assert rc == 1 and "--shuffle-buffer must be >= 1" in err
