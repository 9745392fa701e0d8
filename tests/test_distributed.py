"""Data-parallel fine-tuning on CPU (gloo): 2 processes with batch B take the steps of 1
process with batch 2B, only rank 0 writes, and a run interrupted and resumed under 2
processes ends exactly as the uninterrupted one.

The processes are started by torch.multiprocessing with the environment torchrun sets
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), so they run the same code as
``torchrun ... kaldi-compress finetune``; one test runs torchrun itself.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from kaldi_compress.compute.forward import NnetForward
from kaldi_compress.finetune import (Chunker, FinetuneJob, LossOptions, Trainer, TrainOptions,
                                     World, finetune, network_outputs, table_corpus)
from kaldi_compress.finetune import distill
from kaldi_compress.nnet3 import read_model
from test_finetune import nets, student_file, teacher_file  # noqa: F401 (fixtures)

OPTS = dict(epochs=3, lr=3e-3, warmup=0.1, max_grad_norm=1.0,
            loss=LossOptions(kl_weight=0.0, mse_weight=1.0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(rank: int, size: int, port: int, scenario: str, args: tuple, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = globals()[scenario](*args)
    with open(f"{out}.{rank}.json", "w") as f:
        json.dump(result, f)


def spawn(scenario: str, *args, tmp_path: Path, size: int = 2) -> list:
    """Run ``scenario(*args)`` in ``size`` processes; their JSON results by rank."""
    out = str(tmp_path / f"{scenario}-{free_port()}")
    torch.multiprocessing.spawn(_child, args=(size, free_port(), scenario, args, out),
                                nprocs=size, join=True)
    results = []
    for r in range(size):
        with open(f"{out}.{r}.json") as f:
            results.append(json.load(f))
    return results


def data_args(nets) -> dict:
    return dict(feats=f"ark:{nets / 'feats_dim20.ark.txt'}",
                online_ivectors=f"ark:{nets / 'ivectors_m1.ark.txt'}",
                online_ivector_period=10, frame_subsampling_factor=3)


# --- the trainer: gradients of the global batch ----------------------------------------------
def train_chunks(teacher: str, student: str, nets: str, batch_size: int, world: World
                 ) -> tuple[Trainer, list]:
    """Train on the 15 chunks of the 3 golden utterances (every frame shift)."""
    d = data_args(Path(nets))
    corpus = table_corpus(d["feats"], d["online_ivectors"], 10)
    model = read_model(student)
    cut = Chunker(read_model(teacher).nnet, model.nnet, 3, 51, (0, 1, 2), 10)
    chunks = cut.cut(corpus.utterances)
    chunks.targets = network_outputs(cut.computer.forward, chunks)
    trainer = Trainer(NnetForward(model.nnet), chunks,
                      TrainOptions(**OPTS, batch_size=batch_size), world=world)
    trainer.train()
    return trainer, [h.loss for h in trainer.history]


def trainer_scenario(teacher, student, nets, batch_size):
    from kaldi_compress.finetune.parallel import start, stop, world_from_env
    world = world_from_env()
    start(world, torch.device("cpu"))
    trainer, losses = train_chunks(teacher, student, nets, batch_size, world)
    stop(world)
    return {"params": {k: p.tolist() for k, p in trainer.params.items()}, "losses": losses,
            "step": trainer.step}


def test_two_processes_take_the_steps_of_one_with_the_global_batch(teacher_file, student_file,
                                                                   nets, tmp_path):
    """15 chunks, global batch 12: the second step of every epoch has 3 chunks, all on
    rank 0 (rank 1's share is empty); the students stay equal and match one process."""
    one, one_losses = train_chunks(str(teacher_file), str(student_file), str(nets), 12, World())
    ranks = spawn("trainer_scenario", str(teacher_file), str(student_file), str(nets), 6,
                  tmp_path=tmp_path)
    assert ranks[0] == ranks[1]                     # bit for bit the same student
    assert ranks[0]["step"] == one.step == 3 * 2
    assert ranks[0]["losses"] == pytest.approx(one_losses, rel=1e-5)
    for name, p in one.params.items():
        np.testing.assert_allclose(np.array(ranks[0]["params"][name]), p.detach().numpy(),
                                   rtol=1e-4, atol=1e-6, err_msg=name)


# --- the whole job: rank 0 writes; resume -----------------------------------------------------
def job_scenario(teacher, student, nets, output, batch_size, shuffle_buffer, resume=False,
                 interrupt_at=0):
    """finetune() as torchrun runs it, recording who logs and writes; with
    ``interrupt_at``, rank 1 alone sees a Ctrl-C after that step."""
    from kaldi_compress.finetune import train as train_mod
    rank = int(os.environ["RANK"])
    writes, logs, steps = [], [], []
    real_write, real_save, real_log = distill.write_model, train_mod.Trainer.save, distill.log
    real_step = train_mod.Trainer.train_step
    distill.write_model = lambda model, path, **kw: (writes.append(path),
                                                     real_write(model, path, **kw))
    train_mod.Trainer.save = lambda self, path, *a: (writes.append(path),
                                                     real_save(self, path, *a))
    distill.log = lambda msg, bar: (logs.append(bar is not None), real_log(msg, bar))

    def step(self, idx, lr):
        loss = real_step(self, idx, lr)
        if rank == 1 and self.step == interrupt_at:
            self._interrupted = True
        steps.append(self.step)
        return loss

    train_mod.Trainer.train_step = step
    job = FinetuneJob(teacher, student, output, **data_args(Path(nets)),
                      train=TrainOptions(**OPTS, batch_size=batch_size), device="cpu",
                      shuffle_buffer=shuffle_buffer, resume=resume)
    stopped = None
    try:
        finetune(job)
    except KeyboardInterrupt:    # the checkpoint is complete when any process gets here
        stopped = torch.load(job.checkpoint, weights_only=True)["step"]
        assert stopped == steps[-1]
    return {"writes": writes, "speaks": any(logs), "stopped": stopped}


def components(path) -> dict[str, np.ndarray]:
    return {f"{n}{t}": np.asarray(v, dtype=np.float64)
            for n, c in read_model(str(path)).nnet.components.items()
            for t, v in c.fields if isinstance(v, np.ndarray)}


@pytest.mark.parametrize("shuffle_buffer", [5000, 4], ids=["in-memory", "streamed"])
def test_rank_0_alone_writes_and_resume_under_two_processes_is_exact(
        teacher_file, student_file, nets, tmp_path, shuffle_buffer):
    common = (str(teacher_file), str(student_file), str(nets))
    one = tmp_path / "one.raw"
    job = FinetuneJob(*common[:2], str(one), **data_args(nets), device="cpu",
                      train=TrainOptions(**OPTS, batch_size=4), shuffle_buffer=shuffle_buffer)
    result = finetune(job)
    assert [e.epoch for e in result.epochs] == [1, 2, 3] and result.kept_epoch is None
    assert (result.start is None) == (shuffle_buffer == 4)     # a streamed table: not measured
    if result.start is not None:
        assert result.start.epoch == 0 and result.start.valid_loss is None
        assert result.epochs[-1].loss < result.start.loss

    two = tmp_path / "two.raw"
    ranks = spawn("job_scenario", *common, str(two), 2, shuffle_buffer, tmp_path=tmp_path)
    assert ranks[0]["writes"] == [f"{two}.ckpt"] * 3 + [str(two)] and ranks[0]["speaks"]
    assert ranks[1] == {"writes": [], "speaks": False, "stopped": None}
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".raw") == ["one.raw",
                                                                                 "two.raw"]
    a, b = components(one), components(two)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-6, err_msg=k)

    # Ctrl-C seen by rank 1 alone after step 2: both stop after step 3, rank 0 saves
    out = tmp_path / "out.raw"
    ranks = spawn("job_scenario", *common, str(out), 2, shuffle_buffer, False, 2,
                  tmp_path=tmp_path)
    assert [r["stopped"] for r in ranks] == [3, 3] and not out.exists()
    assert ranks[0]["writes"] == [f"{out}.ckpt"] and ranks[1]["writes"] == []
    with pytest.raises(Exception, match="made by 2 processes, now 1"):
        finetune(replace(job, output=str(out), resume=True,
                         train=TrainOptions(**OPTS, batch_size=2)))
    spawn("job_scenario", *common, str(out), 2, shuffle_buffer, True, tmp_path=tmp_path)
    assert out.read_bytes() == two.read_bytes() and not os.path.exists(f"{out}.ckpt")


def test_torchrun_runs_the_command(teacher_file, student_file, nets, tmp_path):
    """``torchrun --standalone --nproc-per-node=2 $(which kaldi-compress) finetune``: the
    same bytes as the processes started above (the same computation)."""
    torchrun = Path(sys.executable).parent / "torchrun"
    exe = shutil.which("kaldi-compress", path=str(Path(sys.executable).parent))
    if not torchrun.exists() or exe is None:
        pytest.skip("torchrun or the kaldi-compress script is not installed beside python")
    d = data_args(nets)
    out, ref = tmp_path / "torchrun.raw", tmp_path / "spawned.raw"
    spawn("job_scenario", str(teacher_file), str(student_file), str(nets), str(ref), 2, 5000,
          tmp_path=tmp_path)
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node=2", exe, "finetune",
         f"--teacher={teacher_file}", f"--feats={d['feats']}",
         f"--online-ivectors={d['online_ivectors']}", "--online-ivector-period=10",
         "--frame-subsampling-factor=3", "--epochs=3", "--lr=0.003", "--warmup=0.1",
         "--batch-size=2", "--device=cpu", "--num-threads=1", str(student_file), str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("kaldi-compress: wrote") == 1
    assert "2 processes, 2 chunks each per step: global batch 4" in proc.stderr
    assert out.read_bytes() == ref.read_bytes()
