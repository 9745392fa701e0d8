"""Forward-pass throughput on the Korean model, next to Kaldi's nnet3-compute.

Runs the section-2 nnet3-compute setting of ../shared/data/kaldi_golden
(frame-subsampling-factor 3, frames-per-chunk 50 -> 51, online i-vectors every
10 frames) over wav_001..wav_004 (2218 input frames), set up as the ``compute``
command sets up its process (OpenMP threads sleep when idle, freed memory kept
mapped).  Per torch thread count it prints:

- a cold run, like one nnet3-compute run: model load (read, layers, prefix) and
  the first pass (which also builds the chunk plan), in a fresh process each time
  (median of --cold-runs); Python and torch imports (~1.5 s) are not counted;
- the steady state: median and best of --repeats later passes, run round robin
  over the thread counts (this machine's speed drifts by +-20% minute to minute).

    python bench/forward.py [--threads 1,2] [--repeats 11] [--cold-runs 5]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # as importing kaldi_compress does

import numpy.ma  # noqa: E402,F401  (np.unique imports it on first use: an import, not counted)
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kaldi_compress.compute.allocator import keep_freed_memory  # noqa: E402
from kaldi_compress.compute.chunking import ComputeOptions, SimpleComputer  # noqa: E402
from kaldi_compress.evaluate.vosk_decode import vosk_korean_model_dir  # noqa: E402
from kaldi_compress.io.tables import read_matrix_dict  # noqa: E402
from kaldi_compress.nnet3 import read_model  # noqa: E402

KALDI_SECONDS = 0.227   # golden README section 6: whole nnet3-compute run, 2218 frames
OPTIONS = dict(frame_subsampling_factor=3, frames_per_chunk=50, online_ivector_period=10)


def utterances(shared: Path) -> list:
    d = shared / "data" / "kaldi_golden" / "ko_features"
    feats = read_matrix_dict(f"ark:{d / 'mfcc.ark.txt'}")
    ivectors = read_matrix_dict(f"ark:{d / 'ivectors.ark.txt'}")
    return [(feats[k], ivectors[k]) for k in feats]


def setup(utts: list) -> tuple[SimpleComputer, float, float]:
    """(computer, load seconds, first pass seconds)."""
    mdl = vosk_korean_model_dir() / "am" / "final.mdl"
    t0 = time.perf_counter()
    computer = SimpleComputer(read_model(str(mdl)).nnet, ComputeOptions(**OPTIONS))
    t1 = time.perf_counter()
    computer.compute_many(utts)
    return computer, t1 - t0, time.perf_counter() - t1


def cold(threads: int, shared: Path) -> tuple[float, float]:
    """Load and first-pass seconds in a fresh process."""
    out = subprocess.run([sys.executable, __file__, "--cold-child", str(threads)],
                         env={**os.environ, "KALDI_COMPRESS_SHARED": str(shared)},
                         capture_output=True, text=True, check=True)
    return tuple(json.loads(out.stdout.splitlines()[-1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--cold-runs", type=int, default=5)
    p.add_argument("--cold-child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    shared = Path(os.environ.get("KALDI_COMPRESS_SHARED", REPO.parent / "shared"))
    if not (shared / "data" / "kaldi_golden" / "ko_features").is_dir():
        print(f"{shared}/data/kaldi_golden/ko_features is absent: the benchmark needs the "
              "shared research data")
        return 1
    keep_freed_memory()
    utts = utterances(shared)
    gc.freeze()       # the objects of the imports above are never collected
    if args.cold_child:
        torch.set_num_threads(args.cold_child)
        _, load, first = setup(utts)
        print(json.dumps([load, first]))
        return 0
    frames = sum(len(f) for f, _ in utts)
    counts = [int(t) for t in args.threads.split(",")]
    colds = {t: [] for t in counts}
    for _ in range(args.cold_runs):
        for t in counts:
            colds[t].append(cold(t, shared))
    runs: dict[int, tuple[SimpleComputer, list[float]]] = {}
    for t in counts:
        torch.set_num_threads(t)
        runs[t] = (setup(utts)[0], [])
    for _ in range(args.repeats):      # round robin: every setting sees the same moments
        for t, (computer, times) in runs.items():
            torch.set_num_threads(t)
            start = time.perf_counter()
            computer.compute_many(utts)
            times.append(time.perf_counter() - start)
    print(f"Korean model, {len(utts)} utterances, {frames} input frames, "
          "frame-subsampling-factor 3, frames-per-chunk 51")
    print(f"{'':>7} | {'cold run (fresh process, median)':^36} | "
          f"{'steady state (later passes)':^41}")
    print(f"{'threads':>7} | {'load s':>7} {'first s':>8} {'total s':>8} {'frames/s':>9} | "
          f"{'median s':>9} {'best s':>7} {'frames/s':>9} {'best frames/s':>13}")
    for t in counts:
        load = statistics.median(c[0] for c in colds[t])
        first = statistics.median(c[1] for c in colds[t])
        total = statistics.median(c[0] + c[1] for c in colds[t])
        times = runs[t][1]
        median, best = statistics.median(times), min(times)
        print(f"{t:>7} | {load:>7.3f} {first:>8.3f} {total:>8.3f} {frames / total:>9,.0f} | "
              f"{median:>9.3f} {best:>7.3f} {frames / median:>9,.0f} {frames / best:>13,.0f}")
    print(f"Kaldi nnet3-compute (one whole run, model load included): {KALDI_SECONDS} s "
          f"= {frames / KALDI_SECONDS:,.0f} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
