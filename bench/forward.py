"""Forward-pass throughput on the Korean model, next to Kaldi's nnet3-compute.

Runs the section-2 nnet3-compute setting of ../shared/data/kaldi_golden
(frame-subsampling-factor 3, frames-per-chunk 50 -> 51, online i-vectors every
10 frames) over wav_001..wav_004 (2218 input frames), and prints, per torch thread
count: model load time, the first pass (which also builds the chunk plans), the
median and the best of later passes (run round robin over the thread counts, as
this machine's speed drifts by +-20% from minute to minute), and input frames per
second.

    python bench/forward.py [--threads 1,2] [--repeats 5]
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # as the compute command does

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kaldi_compress.compute.chunking import ComputeOptions, SimpleComputer  # noqa: E402
from kaldi_compress.compute.tables import read_matrix_dict  # noqa: E402
from kaldi_compress.evaluate.vosk_decode import vosk_korean_model_dir  # noqa: E402
from kaldi_compress.nnet3 import read_model  # noqa: E402

KALDI_SECONDS = 0.227   # golden README section 6: whole nnet3-compute run, 2218 frames


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args()
    shared = Path(os.environ.get("KALDI_COMPRESS_SHARED", REPO.parent / "shared"))
    feats_dir = shared / "data" / "kaldi_golden" / "ko_features"
    if not feats_dir.is_dir():
        print(f"{feats_dir} is absent: the benchmark needs the shared research data")
        return 1
    feats = read_matrix_dict(f"ark:{feats_dir / 'mfcc.ark.txt'}")
    ivectors = read_matrix_dict(f"ark:{feats_dir / 'ivectors.ark.txt'}")
    utts = [(feats[k], ivectors[k]) for k in feats]
    frames = sum(len(f) for f, _ in utts)
    mdl = vosk_korean_model_dir() / "am" / "final.mdl"
    opts = dict(frame_subsampling_factor=3, frames_per_chunk=50, online_ivector_period=10)
    gc.freeze()
    print(f"Korean model, {len(utts)} utterances, {frames} input frames, "
          "frame-subsampling-factor 3, frames-per-chunk 51, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    print(f"{'threads':>7} {'load s':>7} {'first s':>8} {'median s':>9} {'best s':>7} "
          f"{'frames/s':>9} {'best frames/s':>14} {'frames/s incl. load+first':>26}")
    counts = [int(t) for t in args.threads.split(",")]
    setups = {}
    for threads in counts:
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        computer = SimpleComputer(read_model(str(mdl)).nnet, ComputeOptions(**opts))
        t1 = time.perf_counter()
        computer.compute_many(utts)
        setups[threads] = (computer, t1 - t0, time.perf_counter() - t1, [])
    for _ in range(args.repeats):      # round robin: every setting sees the same moments
        for threads, (computer, _, _, runs) in setups.items():
            torch.set_num_threads(threads)
            start = time.perf_counter()
            computer.compute_many(utts)
            runs.append(time.perf_counter() - start)
    for threads, (_, load, first, runs) in setups.items():
        median, best = statistics.median(runs), min(runs)
        print(f"{threads:>7} {load:>7.3f} {first:>8.3f} {median:>9.3f} {best:>7.3f} "
              f"{frames / median:>9,.0f} {frames / best:>14,.0f} "
              f"{frames / (load + first):>26,.0f}")
    print(f"Kaldi nnet3-compute: {KALDI_SECONDS} s for {frames} frames including model load "
          f"= {frames / KALDI_SECONDS:,.0f} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
