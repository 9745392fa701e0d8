"""Peak memory of a streamed fine-tuning epoch against the length of the feature table.

For 1, 2 and 4 hours of synthetic 40-dim features (random, 10-second utterances,
written with kaldi_io as ``feats.ark`` + ``feats.scp``, and 100-dim online
i-vectors every 10 frames as ``ivectors.scp``), a fresh process distils the
Korean model's SVD student toward the model itself on ``--feats=scp:...``: the
table is planned (headers only), then ``--steps`` steps of a streamed epoch run
(16 chunks per step, shuffle buffer of 5000 chunks, teacher targets per batch).
It prints that process's peak RSS (``ru_maxrss``) per table length: with
streaming it must not grow with the hours.

    python bench/streaming_rss.py [--hours 1,2,4] [--steps 20]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FRAMES_PER_HOUR = 360_000          # 10 ms frames
UTTERANCE = 1000                   # frames: 10-second utterances


def write_table(directory: Path, seconds: float, feat_dim: int = 40, ivector_dim: int = 100,
                period: int = 10, seed: int = 0) -> tuple[str, str]:
    """Random features and online i-vectors of ``seconds`` of audio as ark + scp; the
    two rspecifiers.  Written an utterance at a time (memory stays small)."""
    from kaldi_compress.io.tables import kaldi_io

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frames = int(seconds * 100)
    lengths = [UTTERANCE] * (frames // UTTERANCE) + ([frames % UTTERANCE] if frames %
                                                     UTTERANCE else [])
    specs = []
    for name, dim, every in (("feats", feat_dim, 1), ("ivectors", ivector_dim, period)):
        ark, scp = directory / f"{name}.ark", directory / f"{name}.scp"
        with open(ark, "wb") as f, open(scp, "w") as s:
            for i, n in enumerate(lengths):
                key = f"utt{i:06d}"
                f.write(f"{key} ".encode())
                s.write(f"{key} {ark}:{f.tell()}\n")
                kaldi_io.write_mat(f, rng.normal(size=(-(-n // every), dim)).astype(np.float32))
        specs.append(f"scp:{scp}")
    return specs[0], specs[1]


def korean_pair(directory: Path, param_ratio: float = 0.5) -> tuple[Path, Path]:
    """The Korean model prepared for test (the teacher) and its TDNN layers SVD-compressed
    (the student), written once to ``directory``."""
    from kaldi_compress.compress.svd import SvdOptions, svd_compress
    from kaldi_compress.evaluate.vosk_decode import vosk_korean_model_dir
    from kaldi_compress.nnet3 import read_model, write_model
    from kaldi_compress.nnet3.edit import prepare_for_test

    teacher, student = directory / "teacher.mdl", directory / f"svd{param_ratio}.mdl"
    if not student.exists():
        model = read_model(str(vosk_korean_model_dir() / "am" / "final.mdl"))
        prepare_for_test(model.nnet)
        write_model(model, str(teacher))
        svd_compress(model.nnet, SvdOptions(param_ratio=param_ratio, components="tdnn*"))
        write_model(model, str(student))
    return teacher, student


def child(teacher: str, student: str, feats: str, ivectors: str, steps: int) -> None:
    """A streamed epoch cut after ``steps`` steps; prints peak RSS and timings as JSON."""
    import torch

    from kaldi_compress.compute.forward import NnetForward
    from kaldi_compress.compute.threads import prepare_torch
    from kaldi_compress.finetune import ChunkStream, Trainer
    from kaldi_compress.finetune.distill import FinetuneJob, chunker
    from kaldi_compress.nnet3 import read_model

    prepare_torch(0)
    job = FinetuneJob(teacher, student, "unused", feats=feats, online_ivectors=ivectors,
                      online_ivector_period=10, frame_subsampling_factor=3)
    t0 = time.monotonic()
    model = read_model(student)
    cut = chunker(read_model(teacher).nnet, model.nnet, 3, job, 10, torch.device("cpu"))
    stream = ChunkStream(feats, cut, cut.computer.forward, ivectors, 10, job.shuffle_buffer)
    planned = time.monotonic() - t0
    trainer = Trainer(NnetForward(model.nnet), stream, job.train)
    t0 = time.monotonic()
    for i, batch in enumerate(stream.batches(0, 0, job.train.batch_size)):
        trainer.train_step(batch, 1e-4)
        if i + 1 == steps:
            break
    print(json.dumps({"chunks": len(stream), "plan_s": planned,
                      "steps_s": time.monotonic() - t0,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hours", default="1,2,4")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--child", nargs=4, metavar=("TEACHER", "STUDENT", "FEATS", "IVECTORS"),
                   help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child, args.steps)
        return
    with tempfile.TemporaryDirectory(prefix="streaming_rss.") as tmp:
        teacher, student = korean_pair(Path(tmp))
        print("| hours | utterances | table on disk (MB) | chunks per epoch | plan (s) "
              f"| {args.steps} steps (s) | peak RSS (MB) |")
        print("|---|---|---|---|---|---|---|")
        for hours in (float(h) for h in args.hours.split(",")):
            d = Path(tmp) / f"{hours:g}h"
            feats, ivectors = write_table(d, hours * 3600)
            size = sum(f.stat().st_size for f in d.glob("*.ark")) / 2**20
            out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps),
                                  "--child", str(teacher), str(student), feats, ivectors],
                                 capture_output=True, text=True, check=True,
                                 env={**os.environ, "PYTHONWARNINGS": "ignore"})
            r = json.loads(out.stdout.strip().splitlines()[-1])
            utts = sum(1 for _ in open(d / "feats.scp"))
            print(f"| {hours:g} | {utts} | {size:.0f} | {r['chunks']} | {r['plan_s']:.1f} | "
                  f"{r['steps_s']:.1f} | {r['peak_rss_mb']:.0f} |", flush=True)
            for f in d.glob("*.ark"):
                f.unlink()


if __name__ == "__main__":
    main()
