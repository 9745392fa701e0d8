"""Quantization-aware distillation (``finetune --pack-bits=B``): the quantized forward pass
is the forward pass of the model with pack's codebook weights, the straight-through
gradient is the gradient at those weights applied to the float weights, the written
weights lie on at most 2^B values per matrix and pack losslessly, resume stays exact,
and bad option values fail in one line."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from kaldi_compress.compute.forward import NnetForward
from kaldi_compress.errors import KaldiCompressError
from kaldi_compress.finetune import Trainer, TrainOptions
from kaldi_compress.nnet3 import parse_model, read_model
from kaldi_compress.pack import pack_model, quantized_model, unpack_model
from kaldi_compress.pack.codebook import quantize
from kaldi_compress.pack.skeleton import weight_matrices
from test_finetune import (OPTS, corpus, feats_args, korean_teacher_student,  # noqa: F401
                           linked_dir, nets, prepared, run_cli, run_interrupted, snapshot,
                           split, student_file, teacher_file)

BITS = 3


def matrices(model) -> dict[tuple[str, str], np.ndarray]:
    """(component, field) -> matrix, for every matrix pack quantizes."""
    return {(n, t): np.array(m) for n, t, m in weight_matrices(model.nnet)}


def codebook_model(student, trainer):
    """A copy of ``student`` whose packed matrices hold the trainer's Q(W): the model
    with codebook weights.  Its codebooks are pack's k-means of the float32 weights the
    trainer sees (pack's ``quantized_model`` where the file's matrices are float32)."""
    out = student.copy()
    qat = trainer.qat
    for n, t, m in weight_matrices(out.nnet):
        key = next(k for k, w in qat.weights.items()
                   if k.rsplit(".", 1)[0] == n and trainer.student.layer_of(n).tokens[
                       k.rsplit(".", 1)[1]] == t)
        want = quantize(m.astype(np.float32), qat.bits).codebook
        assert np.array_equal(qat.codebooks[key].cpu().numpy(), want), key
        out.nnet.components[n].set(t, qat.values(key).cpu().numpy().astype(m.dtype))
    return out


def assert_on_codebooks_and_packs_losslessly(path, bits: int) -> int:
    """Every packed matrix of the model file has at most 2^bits distinct values, and
    pack + unpack gives back the file's bytes (relative error 0); the pack's size."""
    data = path.read_bytes()
    model = parse_model(bytearray(data), str(path))
    mats = matrices(model)
    assert mats
    for key, m in mats.items():
        assert len(np.unique(m)) <= 2 ** bits, key
    packed, report = pack_model(model, bits, peers=False)
    assert len(report.layers) == len(mats)
    assert all(r.rel_error == 0 and r.codebook <= 2 ** bits for r in report.layers)
    unpacked = unpack_model(packed)
    assert unpacked == data
    for key, m in matrices(parse_model(bytearray(unpacked), "unpacked")).items():
        assert np.array_equal(m, mats[key]), key
    return len(packed)


# --- the forward pass and the gradient --------------------------------------------------------
def test_quantized_forward_is_the_forward_of_the_codebook_model(teacher_file, corpus,
                                                               student_file):
    student, chunks = prepared(teacher_file, corpus, student_file)
    trainer = Trainer(NnetForward(student.nnet), chunks, TrainOptions(**OPTS, pack_bits=BITS))
    reference = codebook_model(student, trainer)
    float32 = [(n, t) for (n, t), m in matrices(student).items() if m.dtype == np.float32]
    assert float32     # where the file's matrices are float32, these are pack's own values
    for key, m in matrices(quantized_model(student, BITS)).items():
        if key in float32:
            assert np.array_equal(m, matrices(reference)[key]), key
    plain = Trainer(NnetForward(reference.nnet), chunks, TrainOptions(**OPTS))
    assert {k.rsplit(".", 1)[0] for k in trainer.qat.weights} == {
        n for n, _ in matrices(student)}
    floats = snapshot(trainer)
    feats, ivecs, _, _, geometry = trainer._batch(torch.arange(len(chunks)))
    with torch.no_grad():
        with trainer.quantized():
            quantized = trainer.student(feats, ivecs, geometry)
        want = plain.student(feats, ivecs, geometry)
        unquantized = trainer.student(feats, ivecs, geometry)
    assert torch.equal(quantized, want)
    assert not torch.allclose(unquantized, want, atol=1e-4)   # 3 bits do change the outputs
    for k, p in trainer.params.items():                       # the float weights are back
        assert torch.equal(p, floats[k]), k
    assert trainer.evaluate(chunks) == plain.evaluate(chunks)
    for name, c in trainer.qat.codebooks.items():
        assert c.numel() <= 2 ** BITS and torch.all(c[1:] > c[:-1]), name


def test_straight_through_gradient_is_the_gradient_at_the_codebook_weights(
        teacher_file, corpus, student_file):
    student, chunks = prepared(teacher_file, corpus, student_file)
    opts = dict(OPTS, optimizer="sgd")
    trainer = Trainer(NnetForward(student.nnet), chunks, TrainOptions(**opts, pack_bits=BITS))
    reference = codebook_model(student, trainer)
    plain = Trainer(NnetForward(reference.nnet), chunks, TrainOptions(**opts))
    idx = trainer.batches(0)[0]
    plain.loss_on(idx).backward()
    before, lr = snapshot(trainer), 0.05
    trainer.train_step(idx, lr)
    for k, p in trainer.params.items():
        g = plain.params[k].grad
        assert g is not None and torch.equal(p.grad, g), k
        # SGD's first step (momentum buffer = gradient) moves the float weights, not Q(W)
        assert torch.equal(p.detach(), before[k].add(g, alpha=-lr)), k


# --- checkpoints --------------------------------------------------------------------------------
def test_resume_is_exact_and_keeps_the_best_codebooks(teacher_file, corpus, student_file,
                                                     tmp_path):
    """Interrupted mid-epoch 3 (step 5 of 8, after two refits), with validation: the
    codebooks of the running epoch and of the best epoch are in the checkpoint, and the
    resumed run ends as the uninterrupted one, to the bit."""
    opts = TrainOptions(**OPTS, pack_bits=BITS)
    student, train, valid = split(teacher_file, corpus, student_file)
    full = Trainer(NnetForward(student.nnet), train, opts, valid)
    start = full.qat.copy_codebooks()
    full.train()
    assert any(not torch.equal(start[k], c) for k, c in full.qat.codebooks.items())
    ckpt = str(tmp_path / "run.ckpt")
    student, _, _ = split(teacher_file, corpus, student_file)
    first = Trainer(NnetForward(student.nnet), train, opts, valid)

    def interrupt_at_5(trainer, loss):
        if trainer.step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        first.train(ckpt, on_step=interrupt_at_5)
    student, _, _ = split(teacher_file, corpus, student_file)
    second = Trainer(NnetForward(student.nnet), train, opts, valid)
    second.load(ckpt)
    for k, c in first.qat.codebooks.items():
        assert torch.equal(second.qat.codebooks[k], c), k
    second.train()
    assert [h.valid_loss for h in second.history] == [h.valid_loss for h in full.history]
    assert second.best.epoch == full.best.epoch
    for t in (second, full):
        t.restore_best()
        t.qat.apply()
    for k, c in full.qat.codebooks.items():
        assert torch.equal(second.qat.codebooks[k], c), k
        assert torch.equal(c, full.best.codebooks[k].to(c.device)), k
    for name, p in second.params.items():
        assert torch.equal(p, full.params[name]), name
    # a checkpoint with codebooks is refused without --pack-bits or with other bits
    for other in (TrainOptions(**OPTS), TrainOptions(**OPTS, pack_bits=BITS + 1)):
        with pytest.raises(KaldiCompressError, match="made with --pack-bits=3, now (off|4)"):
            Trainer(NnetForward(student.nnet), train, other, valid).load(ckpt)


# --- the command line ---------------------------------------------------------------------------
def test_cli_writes_weights_that_pack_losslessly_and_resumes_exactly(
        teacher_file, corpus, feats_args, student_file, tmp_path, run_cli, monkeypatch):
    # 5 chunks, 3 steps per epoch: the Ctrl-C comes mid-epoch
    common = [f"--teacher={teacher_file}", *feats_args, "--epochs=3", "--batch-size=2",
              "--lr=0.003", "--frame-shifts=false", f"--pack-bits={BITS}", str(student_file)]
    straight = tmp_path / "straight.raw"
    rc, err = run_cli(*common, str(straight))
    assert rc == 0, err
    assert f"codebooks of at most {2 ** BITS} values (pack --bits={BITS})" in err
    assert_on_codebooks_and_packs_losslessly(straight, BITS)
    out = tmp_path / "out.raw"
    rc, err = run_interrupted(run_cli, monkeypatch, *common, str(out))
    assert rc == 130 and os.path.exists(f"{out}.ckpt")
    rc, err = run_cli(*common[:-2], "--resume", str(student_file), str(out))  # no --pack-bits
    last = err.splitlines()[-1]
    assert rc == 1 and last.startswith("kaldi-compress: error: ") and \
        "made with --pack-bits=3, now off" in last
    rc, err = run_cli(*common, "--resume", str(out))
    assert rc == 0, err
    assert out.read_bytes() == straight.read_bytes()
    # distilled through the codebooks, the written model is closer to the teacher than
    # the student quantized without training
    _, chunks = prepared(teacher_file, corpus, student_file)
    untrained = quantized_model(read_model(str(student_file)), BITS)
    losses = [Trainer(NnetForward(m.nnet), chunks, TrainOptions(**OPTS)).evaluate(chunks)
              for m in (untrained, read_model(str(straight)))]
    assert losses[1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("value,message", [
    ("0", "bits must be in 1..8, got 0"),
    ("17", "bits must be in 1..8, got 17"),
    ("9", "bits must be in 1..8, got 9"),
    ("2.5", "expected an integer, got '2.5'"),
    ("four", "expected an integer, got 'four'"),
])
def test_cli_bad_pack_bits_is_one_line(teacher_file, feats_args, student_file, tmp_path,
                                       run_cli, value, message):
    out = tmp_path / "out.raw"
    rc, err = run_cli(f"--teacher={teacher_file}", *feats_args, f"--pack-bits={value}",
                      str(student_file), str(out))
    assert rc == 1 and err.count("\n") == 1 and f"--pack-bits: {message}" in err, err
    assert not out.exists() and not os.path.exists(f"{out}.ckpt")


def test_library_refuses_bad_pack_bits():
    for bad in (0, 17, 2.5, True):
        with pytest.raises(KaldiCompressError, match="--pack-bits"):
            TrainOptions(pack_bits=bad).check()
    TrainOptions(pack_bits=8).check()
    assert TrainOptions().pack_bits is None


# --- the Korean model ---------------------------------------------------------------------------
def test_korean_half_size_student_distilled_at_4_bits_packs_losslessly(
        ko_mdl, ko_model_dir, ko_wide_train, tmp_path, run_cli):
    """The Korean model's TDNN layers at half their parameters (SVD), distilled for one
    epoch on one short tuning wav through 4-bit codebooks: the written model's weights
    are on 16 values per matrix and its pack unpacks to the same bytes."""
    teacher_path, student_path = korean_teacher_student(ko_mdl, tmp_path, 0.5)
    shortest = sorted(ko_wide_train.glob("*.wav"), key=lambda w: w.stat().st_size)
    train = linked_dir(tmp_path / "train", shortest[:1])
    out = tmp_path / "qat4.mdl"
    rc, err = run_cli(f"--teacher={teacher_path}", f"--model-dir={ko_model_dir}",
                      f"--data={train}", "--dither=0", "--epochs=1", "--batch-size=4",
                      "--frame-shifts=false", "--pack-bits=4", str(student_path), str(out))
    assert rc == 0, err
    size = assert_on_codebooks_and_packs_losslessly(out, 4)
    # the student's file is 6.94 MB; its 4-bit pack measured 1,138,403 bytes (2026-12-06)
    assert size < 0.17 * out.stat().st_size and size < 1_200_000, size
