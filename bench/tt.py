"""TT-SVD speed and error: ours against tensorly's ``tensor_train_matrix``.

Both factorize the same float64 matrices (layers of the Korean model) into the same TT
shapes with the same rank caps; the error is ||W - TT||_F / ||W||_F of the dense
product of each one's cores.  Times are medians of 5 in-process runs on one BLAS
thread (set before numpy loads; on a shared machine spinning BLAS threads distort
small factorizations).  tensorly is a bench/test dependency only.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before numpy is imported

import numpy as np  # noqa: E402

from kaldi_compress import read_model  # noqa: E402
from kaldi_compress.compress.tt import TTShape, tt_svd  # noqa: E402
from kaldi_compress.evaluate.vosk_decode import vosk_korean_model_dir  # noqa: E402

CASES = [  # (component, TT shape, rank caps)
    ("tdnn1.affine", "32x24,11x20", (8, 32)),
    ("tdnn1.affine", "12x8x8,4x5x11", (8, 32)),
    ("tdnnf2.linear", "8x8,24x64", (8, 32)),
    ("tdnnf2.linear", "4x4x4,8x12x16", (8, 32)),
    ("tdnnf2.affine", "32x24,8x16", (8, 32)),
    ("prefinal-chain.affine", "24x32,8x8", (8, 64)),
    ("prefinal-chain.affine", "8x8x12,4x4x4", (8, 32)),
    ("output.affine", "109x24,8x8", (8, 32)),
    ("output.affine", "109x8x3,4x4x4", (8, 32)),
]


def median_time(fn, repeats: int = 5) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(vosk_korean_model_dir() / "am" / "final.mdl"))
    args = ap.parse_args()
    import tensorly as tl
    from tensorly.decomposition import tensor_train_matrix
    nnet = read_model(args.model).nnet
    print(f"{'layer':22s} {'shape':16s} {'rank':>4s} {'ours s':>8s} {'tensorly s':>10s} "
          f"{'speed-up':>8s} {'ours err':>10s} {'tensorly err':>12s} {'|diff|':>8s}")
    total_ours = total_theirs = 0.0
    for name, shape_text, ranks in CASES:
        w = nnet.components[name].linear_params.astype(np.float64)
        shape = TTShape.parse(shape_text)
        norm = np.linalg.norm(w)
        for r in ranks:
            t_ours, ours = median_time(lambda: tt_svd(w, shape, max_rank=r))
            tensor = w.reshape(shape.out_modes + shape.in_modes)
            rank = [1] + [r] * (shape.d - 1) + [1]
            t_theirs, theirs = median_time(lambda: tensor_train_matrix(tensor, list(rank)))
            e_ours = np.linalg.norm(w - ours.to_matrix()) / norm
            e_theirs = np.linalg.norm(w - tl.tt_matrix_to_tensor(theirs).reshape(w.shape)) / norm
            total_ours += t_ours
            total_theirs += t_theirs
            print(f"{name:22s} {shape_text:16s} {r:4d} {t_ours:8.4f} {t_theirs:10.4f} "
                  f"{t_theirs / t_ours:7.1f}x {e_ours:10.6f} {e_theirs:12.6f} "
                  f"{abs(e_ours - e_theirs):8.1e}")
    print(f"{'total':22s} {'':16s} {'':4s} {total_ours:8.4f} {total_theirs:10.4f} "
          f"{total_theirs / total_ours:7.1f}x")


if __name__ == "__main__":
    main()
