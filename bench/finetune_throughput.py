"""Distillation throughput: frames per second of streamed fine-tuning, 1 and 2 processes.

The Korean model (prepared for test) teaches its SVD-0.5 student on ``--minutes`` of
synthetic 40-dim features with 100-dim online i-vectors (as ``feats.scp`` /
``ivectors.scp``, :func:`streaming_rss.write_table`), streamed (teacher targets per
batch: both networks' forward passes and the student's backward pass are timed),
frame shifts on, one epoch, the same global batch of 16 chunks everywhere:

- 1 process with 1 and with 2 torch threads;
- 2 processes of 1 thread under ``torchrun --standalone --nproc-per-node=2`` (gloo),
  8 chunks each per step;
- CUDA (``--device=cuda``, 1 process) when torch sees a GPU.

Frames are the input frames the epoch's loss covers (its counted outputs times the
subsampling factor 3, i.e. seconds of audio x 100 per frame shift); the time is
the training loop's alone (no start-up, no planning).

    python bench/finetune_throughput.py [--minutes 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from streaming_rss import korean_pair, write_table  # noqa: E402


def child(teacher: str, student: str, feats: str, ivectors: str, batch: int,
          device: str) -> None:
    """One epoch through ``finetune`` with Trainer.train timed; rank 0 prints JSON."""
    from kaldi_compress.finetune import FinetuneJob, TrainOptions, finetune
    from kaldi_compress.finetune import train as train_mod
    from kaldi_compress.finetune.options import LossOptions

    timed = {}
    real_train = train_mod.Trainer.train

    def train(self, *args, **kw):
        t0 = time.monotonic()
        real_train(self, *args, **kw)
        timed.update(seconds=time.monotonic() - t0, steps=self.step,
                     frames=self.chunks.num_outputs * 3)

    train_mod.Trainer.train = train
    out = Path(tempfile.mkdtemp(prefix="throughput.")) / "out.mdl"
    finetune(FinetuneJob(teacher, student, str(out), feats=feats, online_ivectors=ivectors,
                         online_ivector_period=10, frame_subsampling_factor=3,
                         shuffle_buffer=256, device=device,
                         train=TrainOptions(epochs=1, batch_size=batch, max_grad_norm=1.0,
                                            loss=LossOptions(kl_weight=0.0, mse_weight=1.0))))
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps(timed))


def run(cmd: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        *files, batch, device = args.child
        child(*files, int(batch), device)
        return
    import torch

    with tempfile.TemporaryDirectory(prefix="finetune_throughput.") as tmp:
        teacher, student = korean_pair(Path(tmp))
        feats, ivectors = write_table(Path(tmp) / "data", args.minutes * 60)
        me = [sys.executable, __file__, "--child", str(teacher), str(student), feats, ivectors]
        torchrun = str(Path(sys.executable).parent / "torchrun")
        setups = [("1 process, 1 thread", me + ["16", "cpu"], 1),
                  ("1 process, 2 threads", me + ["16", "cpu"], 2),
                  ("2 processes (torchrun, gloo), 1 thread each",
                   [torchrun, "--standalone", "--nproc-per-node=2"] + me[1:] + ["8", "cpu"], 1)]
        if torch.cuda.is_available():
            setups.append(("1 process, CUDA", me + ["16", "cuda"], 1))
        print(f"{args.minutes:g} minutes of synthetic features, Korean model -> SVD-0.5 "
              "student, global batch 16 chunks, streamed")
        print("| setup | steps | frames | seconds | frames/s |")
        print("|---|---|---|---|---|")
        for name, cmd, threads in setups:
            r = run(cmd, threads)
            print(f"| {name} | {r['steps']} | {r['frames']} | {r['seconds']:.1f} | "
                  f"{r['frames'] / r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
