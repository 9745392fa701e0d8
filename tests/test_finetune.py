"""Distillation fine-tuning: chunks as decoding cuts them, losses as defined, training
that lowers the loss, a written model equal to the trained module, exact resume."""
from __future__ import annotations

import math
import re
import os
import signal

import numpy as np
import pytest
import torch

from kaldi_compress import cli
from kaldi_compress.cli import finetune as finetune_cmd
from kaldi_compress.compute.chunking import ComputeOptions, SimpleComputer
from kaldi_compress.compute.forward import NnetForward
from kaldi_compress.compress.svd import SvdOptions, svd_compress
from kaldi_compress.errors import KaldiCompressError
from kaldi_compress.finetune import (Corpus, LossOptions, Trainer, TrainOptions,
                                     default_train_options, distill_loss, lr_factor,
                                     make_chunks, network_outputs, table_corpus,
                                     trainable_parameters, wav_corpus)
from kaldi_compress.finetune.loss import frame_kl, frame_mse
from kaldi_compress.finetune.train import EpochStats
from kaldi_compress.nnet3 import read_model, write_model
from kaldi_compress.nnet3.edit import prepare_for_test


# --- the small golden network (random init, 20-dim features, 8-dim i-vectors) -------------
@pytest.fixture(scope="module")
def nets(golden):
    return golden / "nnets"


@pytest.fixture(scope="module")
def feats_args(nets) -> list[str]:
    return [f"--feats=ark:{nets / 'feats_dim20.ark.txt'}",
            f"--online-ivectors=ark:{nets / 'ivectors_m1.ark.txt'}",
            "--online-ivector-period=10", "--frame-subsampling-factor=3"]


@pytest.fixture(scope="module")
def corpus(nets):
    return table_corpus(f"ark:{nets / 'feats_dim20.ark.txt'}",
                        f"ark:{nets / 'ivectors_m1.ark.txt'}", 10)


@pytest.fixture(scope="module")
def teacher_file(nets, tmp_path_factory):
    """m1_tdnnf with a random output layer (Kaldi initialises it to zero), xent branch
    removed: a teacher whose outputs carry information."""
    model = read_model(str(nets / "m1_tdnnf.raw"))
    prepare_for_test(model.nnet)
    comp = model.nnet.components["output.affine"]
    rng = np.random.default_rng(0)
    comp.set("<LinearParams>", rng.normal(0, 0.5, comp["<LinearParams>"].shape))
    comp.set("<BiasParams>", rng.normal(0, 0.5, comp["<BiasParams>"].shape))
    path = tmp_path_factory.mktemp("teacher") / "teacher.raw"
    write_model(model, str(path))
    return path


@pytest.fixture(scope="module")
def student_file(teacher_file, tmp_path_factory):
    """The teacher with its TDNN layers compressed by SVD (weights only)."""
    model = read_model(str(teacher_file))
    svd_compress(model.nnet, SvdOptions(param_ratio=0.7, components="tdnn*"))
    path = tmp_path_factory.mktemp("student") / "student.raw"
    write_model(model, str(path))
    return path


def teacher_nnet(teacher_file):
    return read_model(str(teacher_file)).nnet


def prepared(teacher_file, corpus, student_path, shifts=(0,)):
    """(student Model, chunks with teacher targets)."""
    student = read_model(str(student_path))
    chunks, computer = make_chunks(corpus, teacher_nnet(teacher_file), student.nnet, 3, 51,
                                   shifts)
    chunks.targets = network_outputs(computer.forward, chunks)
    return student, chunks


OPTS = dict(epochs=4, lr=3e-3, batch_size=2, warmup=0.1)


def split(teacher_file, corpus, student_path):
    """(student Model, training chunks of utt2 and utt3, validation chunks of utt1 with
    every frame shift), all with teacher targets."""
    student = read_model(str(student_path))
    teacher = teacher_nnet(teacher_file)
    out = []
    for utts, shifts in ((corpus.utterances[1:], (0,)), (corpus.utterances[:1], (0, 1, 2))):
        chunks, computer = make_chunks(Corpus(utts, corpus.ivector_period), teacher,
                                       student.nnet, 3, 51, shifts)
        chunks.targets = network_outputs(computer.forward, chunks)
        out.append(chunks)
    return student, *out


# --- chunks -------------------------------------------------------------------------------
def test_chunk_targets_are_what_decoding_computes(teacher_file, corpus, student_file):
    _, chunks = prepared(teacher_file, corpus, student_file)
    computer = SimpleComputer(teacher_nnet(teacher_file), ComputeOptions(
        frame_subsampling_factor=3, frames_per_chunk=51, online_ivector_period=10))
    want = np.concatenate([computer.compute(u.feats, u.ivectors) for u in corpus.utterances])
    got = chunks.targets[chunks.mask].float().numpy()
    assert got.shape == want.shape == (sum(-(-len(u.feats) // 3) for u in corpus.utterances), 31)
    assert np.abs(got - want).max() <= 2e-3 * max(1.0, np.abs(want).max())   # float16 storage
    assert chunks.geometry.num_outputs == 17 and len(chunks) == 1 + 2 + 2


def test_frame_shifts_cover_every_frame_once(teacher_file, corpus, student_file):
    _, chunks = prepared(teacher_file, corpus, student_file, shifts=(0, 1, 2))
    assert chunks.num_outputs == corpus.num_frames
    with pytest.raises(KaldiCompressError, match="frame shifts"):
        teacher = teacher_nnet(teacher_file)
        make_chunks(corpus, teacher, teacher, 3, 51, (3,))


# --- losses and schedule ------------------------------------------------------------------
def test_losses_follow_their_definitions():
    g = torch.Generator().manual_seed(0)
    s, y = torch.randn(2, 3, 7, generator=g), torch.randn(2, 3, 7, generator=g)
    p, q = torch.softmax(y / 2, -1), torch.softmax(s / 2, -1)
    assert torch.allclose(frame_kl(s, y, 2.0), 4 * (p * (p / q).log()).sum(-1), atol=1e-6)
    d = s - y
    assert torch.allclose(frame_mse(s, y), d.var(-1, unbiased=False), atol=1e-6)
    # a per-frame constant changes neither loss (the decoder does not see it)
    shifted = s + torch.randn(2, 3, 1, generator=g)
    assert torch.allclose(frame_kl(shifted, y), frame_kl(s, y), atol=1e-5)
    assert torch.allclose(frame_mse(shifted, y), frame_mse(s, y), atol=1e-5)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    both = LossOptions(kl_weight=0.5, mse_weight=2.0)
    want = (0.5 * frame_kl(s, y) + 2.0 * frame_mse(s, y))[mask].mean()
    assert torch.allclose(distill_loss(s, y, mask, both), want, atol=1e-6)
    assert float(distill_loss(y, y, mask, both)) == pytest.approx(0.0, abs=1e-6)


def test_learning_rate_schedule():
    assert lr_factor(0.0, 0.1, 0.02) == 0.0
    assert lr_factor(0.05, 0.1, 0.02) == pytest.approx(0.5)
    assert lr_factor(0.1, 0.1, 0.02) == pytest.approx(1.0)
    assert lr_factor(0.55, 0.1, 0.02) == pytest.approx(0.02 + 0.98 * 0.5)
    assert lr_factor(1.0, 0.1, 0.02) == pytest.approx(0.02)
    after = [lr_factor(p, 0.1, 0.02) for p in np.linspace(0.1, 1, 50)]
    assert all(a >= b for a, b in zip(after, after[1:]))


# --- training -------------------------------------------------------------------------------
def test_training_lowers_the_loss_and_writes_what_it_trained(teacher_file, corpus, student_file,
                                                             tmp_path):
    student, chunks = prepared(teacher_file, corpus, student_file)
    trainer = Trainer(NnetForward(student.nnet), chunks, TrainOptions(**OPTS))
    frozen = {n: [(t, np.array(v)) for t, v in c.fields if isinstance(v, np.ndarray)]
              for n, c in student.nnet.components.items() if not c.is_updatable}
    before = trainer.evaluate(chunks)
    trainer.train()
    after = trainer.evaluate(chunks)
    assert after < 0.5 * before
    assert [h.epoch for h in trainer.history] == [1, 2, 3, 4]
    assert trainer.history[-1].loss < trainer.history[0].loss
    # only updatable components are trained; batch norm keeps its statistics
    assert {k.rsplit(".", 1)[0] for k in trainable_parameters(trainer.student)} == {
        n for n, c in student.nnet.components.items() if c.is_updatable}
    trainer.student.write_back()
    out = tmp_path / "tuned.raw"
    write_model(student, str(out))
    reread = read_model(str(out)).nnet
    for n, fields in frozen.items():
        for token, value in fields:
            assert np.array_equal(reread.components[n][token], value), (n, token)
    opts = ComputeOptions(frame_subsampling_factor=3, frames_per_chunk=51,
                          online_ivector_period=10)
    utts = [(u.feats, u.ivectors) for u in corpus.utterances]
    trained = SimpleComputer(student.nnet, opts, forward=trainer.student).compute_many(utts)
    written = SimpleComputer(reread, ComputeOptions(**vars(opts))).compute_many(utts)
    for a, b in zip(trained, written):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_sigterm_stops_after_the_step_with_a_checkpoint(teacher_file, corpus, student_file,
                                                        tmp_path):
    """What queue.pl or slurm send a job they stop: like the first Ctrl-C, the step ends,
    the checkpoint is written, KeyboardInterrupt is raised, and the handlers are restored."""
    student, chunks = prepared(teacher_file, corpus, student_file)
    trainer = Trainer(NnetForward(student.nnet), chunks, TrainOptions(**OPTS))
    ckpt = str(tmp_path / "run.ckpt")
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    def term_at_4(t, loss):
        if t.step == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(KeyboardInterrupt):
        trainer.train(ckpt, on_step=term_at_4)
    assert trainer.step == 4 and os.path.exists(ckpt)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    again = Trainer(NnetForward(prepared(teacher_file, corpus, student_file)[0].nnet), chunks,
                    TrainOptions(**OPTS))
    again.load(ckpt)
    assert again.step == 4


def test_checkpoint_restores_exactly_and_resume_continues_the_same_run(teacher_file, corpus,
                                                                      student_file, tmp_path):
    student, chunks = prepared(teacher_file, corpus, student_file)
    full = Trainer(NnetForward(student.nnet), chunks, TrainOptions(**OPTS))
    full.train()
    ckpt = str(tmp_path / "run.ckpt")
    student, _ = prepared(teacher_file, corpus, student_file)
    first = Trainer(NnetForward(student.nnet), chunks, TrainOptions(**OPTS))

    def interrupt_at_5(trainer, loss):
        if trainer.step == 5:       # mid-epoch: 3 steps per epoch
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        first.train(ckpt, on_step=interrupt_at_5)
    assert first.step == 5 and os.path.exists(ckpt)
    student, _ = prepared(teacher_file, corpus, student_file)
    second = Trainer(NnetForward(student.nnet), chunks, TrainOptions(**OPTS))
    second.load(ckpt)
    assert second.step == 5
    for name, p in second.params.items():
        assert torch.equal(p, first.params[name]), name
    a, b = first.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    assert all(torch.equal(a[k]["exp_avg_sq"], b[k]["exp_avg_sq"]) for k in a)
    second.train()
    assert second.step == full.step == 12
    for name, p in second.params.items():
        assert torch.equal(p, full.params[name]), name
    assert [h.loss for h in second.history] == pytest.approx([h.loss for h in full.history])


# --- validation ------------------------------------------------------------------------------
def snapshot(trainer) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in trainer.params.items()}


def test_validation_keeps_the_best_epoch(teacher_file, corpus, student_file):
    """Two training utterances overfit: the training loss keeps falling while the loss on
    the third utterance rises again after epoch 2; the best epoch's parameters are kept."""
    student, train, valid = split(teacher_file, corpus, student_file)
    trainer = Trainer(NnetForward(student.nnet), train, TrainOptions(**OPTS), valid)
    after = {0: snapshot(trainer)}
    trainer.train(on_epoch=lambda t, stats: after.update({stats.epoch: snapshot(t)}))
    train_losses = [h.loss for h in trainer.history]
    valid_losses = [h.valid_loss for h in trainer.history]
    assert train_losses == sorted(train_losses, reverse=True) and len(valid_losses) == 4
    assert trainer.best.epoch == 2 == 1 + int(np.argmin(valid_losses))
    assert valid_losses[-1] > min(valid_losses) and trainer.best.loss == min(valid_losses)
    trainer.restore_best()
    for name, p in trainer.params.items():
        assert torch.equal(p, after[2][name]), name
    assert trainer.evaluate(valid) == trainer.best.loss
    assert not trainer.stopped_early and trainer.step == trainer.total_steps


def test_early_stopping_after_patience_epochs(teacher_file, corpus, student_file):
    student, train, valid = split(teacher_file, corpus, student_file)
    opts = TrainOptions(**OPTS, early_stop_patience=1)
    trainer = Trainer(NnetForward(student.nnet), train, opts, valid)
    trainer.train()
    assert trainer.stopped_early and trainer.best.epoch == 2
    assert [h.epoch for h in trainer.history] == [1, 2, 3]
    assert trainer.step == 3 * trainer.steps_per_epoch < trainer.total_steps


def test_reject_worse_undoes_the_epoch_and_halves_the_learning_rate(teacher_file, corpus,
                                                                    student_file, tmp_path):
    """Epoch 3 raises the validation loss (see above): with reject_worse it is undone (the
    parameters are epoch 2's again, Adam's moments cleared) and every later step runs at
    half the scheduled rate; an interrupted run resumes to the same end."""
    student, train, valid = split(teacher_file, corpus, student_file)
    plain = Trainer(NnetForward(student.nnet), train, TrainOptions(**OPTS), valid)
    plain.train()
    student, _, _ = split(teacher_file, corpus, student_file)
    opts = TrainOptions(**OPTS, reject_worse=True)
    trainer = Trainer(NnetForward(student.nnet), train, opts, valid)
    after, moments = {}, {}

    def on_epoch(t, stats):
        after[stats.epoch] = snapshot(t)
        moments[stats.epoch] = len(t.optimizer.state)

    trainer.train(on_epoch=on_epoch)
    h = trainer.history
    assert [e.rejected for e in h[:3]] == [False, False, True]
    assert [e.valid_loss for e in h[:3]] == [e.valid_loss for e in plain.history[:3]]
    for name, p in after[3].items():
        assert torch.equal(p, after[2][name]), name
    assert moments[3] == 0 < moments[2]
    assert h[3].lr == 0.5 * plain.history[3].lr
    assert trainer.lr_scale == (0.25 if h[3].rejected else 0.5)
    assert trainer.best.epoch == (2 if h[3].rejected else 4)
    assert h[3].rejected == (h[3].valid_loss >= h[1].valid_loss)
    # resumed from a checkpoint written after the rejection: the same run
    ckpt = str(tmp_path / "run.ckpt")
    student, _, _ = split(teacher_file, corpus, student_file)
    first = Trainer(NnetForward(student.nnet), train, opts, valid)

    def interrupt_at_7(t, loss):
        if t.step == 7:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        first.train(ckpt, on_step=interrupt_at_7)
    student, _, _ = split(teacher_file, corpus, student_file)
    second = Trainer(NnetForward(student.nnet), train, opts, valid)
    second.load(ckpt)
    assert second.lr_scale == 0.5 and second.history[-1].rejected
    second.train()
    assert second.history == trainer.history
    for name, p in second.params.items():
        assert torch.equal(p, trainer.params[name]), name


def test_valid_checks_abandon_an_epoch_that_doubles_the_untrained_loss(
        teacher_file, corpus, student_file, tmp_path):
    """At a rate that wrecks the student, a check within epoch 1 finds twice the untrained
    student's validation loss or more: the epoch is abandoned there (parameters back, Adam's
    moments cleared, rate halved, its steps taken back) and started again, until a rate
    survives its checks; the run ends and resumes exactly.  Checks that pass change
    nothing: at a sane rate the run is the one without checks, bit for bit."""
    opts = dict(OPTS, lr=0.5, epochs=3, warmup=0.0)
    student, train, valid = split(teacher_file, corpus, student_file)
    trainer = Trainer(NnetForward(student.nnet), train,
                      TrainOptions(**opts, reject_worse=True, valid_checks=3), valid)
    untrained, seen = snapshot(trainer), []
    before = trainer.evaluate(valid)

    def on_epoch(t, stats):
        seen.append((t.step, len(t.optimizer.state), snapshot(t)))

    trainer.train(on_epoch=on_epoch)
    h, n = trainer.history, trainer.steps_per_epoch
    checks = {j * n // 4 for j in (1, 2, 3)} - {0}
    abandoned = [e for e in h if e.steps is not None]
    assert abandoned and h[0].steps is not None and h[0].epoch == 1
    for e, (step, moments, params) in zip(h, seen):
        if e.steps is None:
            break
        assert e.rejected and e.steps in checks
        assert e.valid_loss >= 2 * before
        assert step == 0 and moments == 0          # back to the start of epoch 1
        for name, p in params.items():
            assert torch.equal(p, untrained[name]), name
    assert trainer.best.epoch > 0 and trainer.best.loss < before
    assert trainer.lr_scale == 0.5 ** sum(e.rejected for e in h)
    assert trainer.step == trainer.total_steps        # a surviving rate ran the schedule
    # without checks the same rate runs epoch 1 to its end (and is rejected there)
    student, _, _ = split(teacher_file, corpus, student_file)
    whole = Trainer(NnetForward(student.nnet), train,
                    TrainOptions(**opts, reject_worse=True), valid)
    whole.train()
    assert whole.history[0].steps is None and whole.history[0].rejected
    # interrupted after the first abandon, resumed: the same run
    ckpt = str(tmp_path / "run.ckpt")
    student, _, _ = split(teacher_file, corpus, student_file)
    first = Trainer(NnetForward(student.nnet), train,
                    TrainOptions(**opts, reject_worse=True, valid_checks=3), valid)

    def interrupt(t, loss):
        if t.history and t.step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        first.train(ckpt, on_step=interrupt)
    student, _, _ = split(teacher_file, corpus, student_file)
    second = Trainer(NnetForward(student.nnet), train,
                     TrainOptions(**opts, reject_worse=True, valid_checks=3), valid)
    second.load(ckpt)
    second.train()
    assert second.history == trainer.history
    for name, p in second.params.items():
        assert torch.equal(p, trainer.params[name]), name
    # a sane rate passes every check: identical to the run without checks
    runs = []
    for checks in (0, 3):
        student, _, _ = split(teacher_file, corpus, student_file)
        t = Trainer(NnetForward(student.nnet), train,
                    TrainOptions(**OPTS, reject_worse=True, valid_checks=checks), valid)
        t.train()
        runs.append(t)
    assert runs[0].history == runs[1].history
    assert all(e.steps is None for e in runs[1].history)
    for name, p in runs[0].params.items():
        assert torch.equal(p, runs[1].params[name]), name


def test_resume_with_validation_continues_the_same_run(teacher_file, corpus, student_file,
                                                       tmp_path):
    """Interrupted after the best epoch (step 5 of 8, mid-epoch 3): the checkpoint carries
    the best parameters and their loss, and the resumed run ends as the uninterrupted one."""
    student, train, valid = split(teacher_file, corpus, student_file)
    full = Trainer(NnetForward(student.nnet), train, TrainOptions(**OPTS), valid)
    full.train()
    ckpt = str(tmp_path / "run.ckpt")
    student, _, _ = split(teacher_file, corpus, student_file)
    first = Trainer(NnetForward(student.nnet), train, TrainOptions(**OPTS), valid)

    def interrupt_at_5(trainer, loss):
        if trainer.step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        first.train(ckpt, on_step=interrupt_at_5)
    student, _, _ = split(teacher_file, corpus, student_file)
    second = Trainer(NnetForward(student.nnet), train, TrainOptions(**OPTS), valid)
    second.load(ckpt)
    assert second.best.epoch == first.best.epoch == full.best.epoch == 2
    assert second.best.loss == first.best.loss == full.best.loss
    second.train()
    assert [h.valid_loss for h in second.history] == [h.valid_loss for h in full.history]
    for t in (second, full):
        t.restore_best()
    for name, p in second.params.items():
        assert torch.equal(p, full.params[name]), name
    with pytest.raises(KaldiCompressError, match="other data"):
        Trainer(NnetForward(student.nnet), train, TrainOptions(**OPTS)).load(ckpt)


def test_checkpoint_keeps_the_losses_before_training(teacher_file, corpus, student_file,
                                                      tmp_path):
    student, train, valid = split(teacher_file, corpus, student_file)
    trainer = Trainer(NnetForward(student.nnet), train, TrainOptions(**OPTS), valid)
    trainer.start = EpochStats(0, trainer.evaluate(train), 0.0, trainer.validate(0))
    ckpt = str(tmp_path / "run.ckpt")
    trainer.save(ckpt)
    student, _, _ = split(teacher_file, corpus, student_file)
    again = Trainer(NnetForward(student.nnet), train, TrainOptions(**OPTS), valid)
    again.load(ckpt)
    assert again.start == trainer.start and again.best.epoch == 0


def test_checkpoint_refuses_other_runs(teacher_file, corpus, student_file, tmp_path):
    student, chunks = prepared(teacher_file, corpus, student_file)
    trainer = Trainer(NnetForward(student.nnet), chunks, TrainOptions(**OPTS))
    ckpt = str(tmp_path / "a.ckpt")
    trainer.save(ckpt)
    other = Trainer(NnetForward(student.nnet), chunks, TrainOptions(**{**OPTS, "lr": 1e-2}))
    with pytest.raises(KaldiCompressError, match="lr=0.003, now 0.01"):
        other.load(ckpt)
    teacher = teacher_nnet(teacher_file)
    _, tchunks = prepared(teacher_file, corpus, teacher_file)
    as_teacher = Trainer(NnetForward(teacher), tchunks, TrainOptions(**OPTS))
    with pytest.raises(KaldiCompressError, match="another student"):
        as_teacher.load(ckpt)
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(KaldiCompressError, match="cannot read checkpoint"):
        trainer.load(str(bad))


# --- command line ---------------------------------------------------------------------------
@pytest.fixture
def run_cli(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "finetune", finetune_cmd)

    def run(*argv: str) -> tuple[int, str]:
        rc = cli.main(["finetune", *argv])
        return rc, capsys.readouterr().err
    return run


def run_interrupted(run_cli, monkeypatch, *argv: str) -> tuple[int, str]:
    """Run the command with a Ctrl-C arriving during training step 2."""
    real_step = Trainer.train_step

    def step_then_ctrl_c(self, idx, lr):
        loss = real_step(self, idx, lr)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    monkeypatch.setattr(Trainer, "train_step", step_then_ctrl_c)
    try:
        return run_cli(*argv)
    finally:
        monkeypatch.setattr(Trainer, "train_step", real_step)


def test_cli_interrupt_and_resume_give_the_uninterrupted_result(teacher_file, feats_args,
                                                                student_file,
                                                                tmp_path, run_cli, monkeypatch):
    common = [f"--teacher={teacher_file}", *feats_args, "--epochs=3",
              "--batch-size=4", "--lr=0.003", "--frame-shifts=false"]
    straight = tmp_path / "straight.raw"
    rc, err = run_cli(*common, str(student_file), str(straight))
    assert rc == 0, err
    assert "loss before training" in err and "epoch 3/3" in err
    assert not os.path.exists(f"{straight}.ckpt")

    out = tmp_path / "out.raw"
    rc, err = run_interrupted(run_cli, monkeypatch, *common, str(student_file), str(out))
    assert rc == 130 and "interrupted" in err and "--resume" in err
    assert not out.exists() and os.path.exists(f"{out}.ckpt")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    rc, err = run_cli(*common, str(student_file), str(out))
    assert rc == 1 and "--resume" in err and err.count("\n") == 1
    rc, err = run_cli(*common, "--resume", str(student_file), str(out))
    assert rc == 0, err
    assert "resuming" in err and not os.path.exists(f"{out}.ckpt")
    assert out.read_bytes() == straight.read_bytes()


def test_time_budget_starts_when_the_targets_are_ready(teacher_file, feats_args, student_file,
                                                      tmp_path, run_cli, monkeypatch):
    """Preparing teacher targets (here made to take 10 minutes of a fake, otherwise
    frozen clock) does not use the --max-minutes budget: a 5-minute budget still trains
    every step, the same result as no budget."""
    import time

    from kaldi_compress.finetune import distill
    common = [f"--teacher={teacher_file}", *feats_args, "--epochs=3",
              "--batch-size=4", "--lr=0.003", "--frame-shifts=false"]
    straight = tmp_path / "straight.raw"
    assert run_cli(*common, str(student_file), str(straight))[0] == 0
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    real_chunks = distill.table_chunks

    def slow_chunks(*args, **kwargs):
        clock[0] += 600.0
        return real_chunks(*args, **kwargs)

    monkeypatch.setattr(distill, "table_chunks", slow_chunks)
    out = tmp_path / "budget.raw"
    rc, err = run_cli(*common, "--max-minutes=5", str(student_file), str(out))
    assert rc == 0, err
    assert clock[0] == 1600.0 and "epoch 3/3" in err
    assert out.read_bytes() == straight.read_bytes()


@pytest.mark.parametrize("case,message", [
    ("overwrite", "refusing to overwrite"),
    ("dims", "input dimension (24) differs from the teacher's (20)"),
    ("no-data", "no training data"),
    ("both-data", "either --feats or --model-dir"),
    ("feat-dim", "expects input features of dimension 20, got 24"),
    ("no-ckpt", "no checkpoint to resume from"),
    ("epochs", "--epochs must be >= 1"),
    ("period", "--online-ivector-period > 0"),
    ("overlap", "validation audio is also training audio"),
    ("overlap-link", "validation audio is also training audio"),
    ("valid-feats", "--valid-data (wav directories) needs --model-dir"),
    ("speed", "--speed-perturb: expected distinct comma-separated factors"),
    ("speed-feats", "--speed-perturb and --volume-perturb need wav data"),
    ("volume-feats", "--speed-perturb and --volume-perturb need wav data"),
    ("patience", "--early-stop-patience and --valid-checks must be >= 0"),
    ("checks", "--early-stop-patience and --valid-checks must be >= 0"),
])
def test_cli_bad_input_is_one_line(nets, teacher_file, feats_args, student_file, tmp_path,
                                   run_cli, case, message):
    teacher = f"--teacher={teacher_file}"
    out = str(tmp_path / "out.raw")
    dim24 = f"--feats=ark:{nets / 'feats_dim24.ark.txt'}"
    wavs, linked = tmp_path / "wavs", tmp_path / "linked"
    for d in (wavs, linked):
        d.mkdir()
    (wavs / "a.wav").write_bytes(b"")
    (linked / "b.wav").symlink_to(wavs / "a.wav")
    wav_args = [teacher, f"--model-dir={tmp_path}", f"--data={wavs}"]
    argv = {
        "overwrite": [teacher, *feats_args, str(student_file), str(student_file)],
        "dims": [teacher, *feats_args, str(nets / "m2_simple.raw"), out],
        "no-data": [teacher, str(student_file), out],
        "both-data": [teacher, *feats_args, f"--model-dir={tmp_path}", f"--data={tmp_path}",
                      str(student_file), out],
        "feat-dim": [teacher, dim24, str(student_file), out],
        "no-ckpt": [teacher, *feats_args, "--resume", str(student_file), out],
        "epochs": [teacher, *feats_args, "--epochs=0", str(student_file), out],
        "period": [teacher, *feats_args[:2], str(student_file), out],
        "overlap": [*wav_args, f"--valid-data={wavs}", str(student_file), out],
        "overlap-link": [*wav_args, f"--valid-data={linked}", str(student_file), out],
        "valid-feats": [teacher, *feats_args, f"--valid-data={wavs}", str(student_file), out],
        "speed": [*wav_args, "--speed-perturb=0.9,fast", str(student_file), out],
        "speed-feats": [teacher, *feats_args, "--speed-perturb=0.9,1", str(student_file), out],
        "volume-feats": [teacher, *feats_args, "--volume-perturb", str(student_file), out],
        "patience": [*wav_args, "--early-stop-patience=-1", str(student_file), out],
        "checks": [*wav_args, "--valid-checks=-1", str(student_file), out],
    }[case]
    rc, err = run_cli(*argv)
    assert rc == 1 and message in err and err.count("\n") == 1, err
    assert not os.path.exists(out)


# --- the Korean model ---------------------------------------------------------------------
def korean_teacher_student(ko_mdl, tmp_path, param_ratio: float) -> tuple:
    """The prepared Korean model and its TDNN layers SVD-compressed (weights only), as files."""
    base = read_model(str(ko_mdl))
    prepare_for_test(base.nnet)
    teacher_path, student_path = tmp_path / "base.mdl", tmp_path / "svd.mdl"
    write_model(base, str(teacher_path))
    svd_compress(base.nnet, SvdOptions(param_ratio=param_ratio, components="tdnn*"))
    write_model(base, str(student_path))
    return teacher_path, student_path


def linked_dir(path, wavs):
    """A new directory of links to ``wavs``."""
    path.mkdir()
    for w in wavs:
        (path / w.name).symlink_to(w)
    return path


@pytest.mark.slow
def test_korean_compressed_model_gains_fidelity_on_held_out_audio(
        ko_mdl, ko_model_dir, ko_wide_train, ko_wide_dev, tmp_path, run_cli):
    from kaldi_compress.compute.fidelity import fidelity

    teacher_path, student_path = korean_teacher_student(ko_mdl, tmp_path, 0.7)
    # tuned on the tuning audio, measured on unseen utterances of the same (wideband)
    # domain: telephone-band training audio (kspon_ko) moves the student away from the
    # teacher on wideband speech
    train = linked_dir(tmp_path / "train", sorted(ko_wide_train.glob("*.wav"))[:20])
    held_out = linked_dir(tmp_path / "held_out", sorted(ko_wide_dev.glob("*.wav"))[:8])
    out = tmp_path / "tuned.mdl"
    rc, err = run_cli(f"--teacher={teacher_path}", f"--model-dir={ko_model_dir}",
                      f"--data={train}", "--dither=0", "--epochs=3",
                      str(student_path), str(out))
    assert rc == 0, err
    teacher = read_model(str(teacher_path)).nnet
    untuned, tuned = (fidelity(teacher, read_model(str(p)).nnet, ko_model_dir, held_out,
                               frames_per_chunk=51, dither=0.0) for p in (student_path, out))
    assert tuned.kl < 0.8 * untuned.kl, (untuned, tuned)
    assert tuned.agreement > untuned.agreement + 5
    assert math.isfinite(tuned.snr_db) and tuned.snr_db > untuned.snr_db


def test_korean_cli_validates_perturbs_and_resumes_exactly(ko_mdl, ko_model_dir, ko_wide_train,
                                                           tmp_path, run_cli, monkeypatch):
    """On the Korean model, one short tuning wav speed- and volume-perturbed 3 ways,
    validated on another: every epoch logs both losses, the written model has the best
    validation loss, and an interrupted and resumed run writes the same bytes."""
    teacher_path, student_path = korean_teacher_student(ko_mdl, tmp_path, 0.5)
    shortest = sorted(ko_wide_train.glob("*.wav"), key=lambda w: w.stat().st_size)
    train = linked_dir(tmp_path / "train", shortest[:1])
    valid = linked_dir(tmp_path / "valid", shortest[1:2])
    common = [f"--teacher={teacher_path}", f"--model-dir={ko_model_dir}", f"--data={train}",
              f"--valid-data={valid}", "--dither=0", "--speed-perturb=0.9,1.0,1.1",
              "--volume-perturb", "--epochs=2", "--batch-size=4", "--frame-shifts=false",
              str(student_path)]
    straight = tmp_path / "straight.mdl"
    rc, err = run_cli(*common, str(straight))
    assert rc == 0, err
    assert "training: 3 utterances" in err and "validation: 1 utterances" in err
    valid_losses = [float(v) for v in re.findall(r"epoch \d/2: loss [\d.e+-]+, valid ([\d.e+-]+)",
                                                  err)]
    before = float(re.search(r"loss before training: [\d.e+-]+, valid ([\d.e+-]+)", err)[1])
    assert len(valid_losses) == 2
    kept = re.search(r"keeping the student after epoch (\d) \(valid ([\d.e+-]+)\)", err)
    best = min([before, *valid_losses])
    assert float(kept[2]) == best and [before, *valid_losses].index(best) == int(kept[1])

    # the written student's own validation loss is the best one logged
    corpus = wav_corpus(ko_model_dir, [valid], dither=0.0)
    tuned = read_model(str(straight))
    chunks, computer = make_chunks(corpus, read_model(str(teacher_path)).nnet, tuned.nnet, 3, 51)
    chunks.targets = network_outputs(computer.forward, chunks)
    trainer = Trainer(NnetForward(tuned.nnet), chunks, default_train_options())
    assert trainer.evaluate(chunks) == pytest.approx(best, rel=1e-4)

    out = tmp_path / "out.mdl"
    rc, err = run_interrupted(run_cli, monkeypatch, *common, str(out))
    assert rc == 130 and os.path.exists(f"{out}.ckpt")
    rc, err = run_cli(*common[:-1], "--resume", common[-1], str(out))
    assert rc == 0 and "resuming" in err, err
    assert out.read_bytes() == straight.read_bytes()
