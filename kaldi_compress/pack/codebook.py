"""Weight sharing: one codebook of at most ``2**bits`` values per weight matrix.

Each weight is replaced by the nearest codebook value and stored as its index (one
byte).  The codebook is fit by 1-D k-means, minimising the squared error
sum (w - c[i(w)])**2, with SciPy's ``scipy.cluster.vq.kmeans2`` (Lloyd's algorithm):

* initialised at the high-rate optimum (Panter-Dite): codebook density proportional to
  the cube root of the weights' density, read off a 4096-bin histogram -- much closer
  to the optimum than quantiles for the peaked weight distributions of trained layers,
  so a few Lloyd iterations suffice;
* fit on a quantile sample (the sorted weights at evenly spaced ranks, at most
  ``SAMPLE`` of them): a deterministic and faithful picture of a 1-D distribution;
* then every weight goes to its nearest value (midpoints between sorted values), and
  values no weight uses are dropped.

With ``prune_threshold`` T > 0, weights with |w| < T become exactly 0, which is a
codebook entry of its own; the other weights share the remaining ``2**bits - 1``
values.  A matrix with no more distinct values than the codebook may hold is stored
exactly (its codebook is its distinct values).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.cluster.vq import kmeans2

MAX_BITS = 8            # indices are stored one per byte
SAMPLE = 1 << 14        # weights the k-means sees (a quantile sample of the matrix)
ITERATIONS = 30         # Lloyd iterations from the cube-root start
HISTOGRAM_BINS = 4096


@dataclass
class Quantized:
    """A matrix as a sorted codebook and one index per weight (row-major)."""
    codebook: np.ndarray     # 1-D, ascending, the weights' dtype
    indices: np.ndarray      # uint8, shape of the matrix
    pruned: int = 0          # weights set to exactly 0 by the prune threshold

    def values(self) -> np.ndarray:
        """The quantized matrix: each weight replaced by its codebook value."""
        return self.codebook[self.indices]


def check_bits(bits: int) -> None:
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in 1..{MAX_BITS}, got {bits}")


def quantize(weights: np.ndarray, bits: int, prune_threshold: float = 0.0) -> Quantized:
    """The codebook and indices of ``weights`` (any shape, finite floats)."""
    check_bits(bits)
    w = np.asarray(weights)
    flat = w.ravel().astype(np.float64)
    keep = np.abs(flat) >= prune_threshold if prune_threshold > 0 else np.ones(flat.size, bool)
    pruned = int(flat.size - keep.sum())
    k = (1 << bits) - (1 if prune_threshold > 0 else 0)
    kept = flat[keep]
    distinct = np.unique(kept)
    centroids = distinct if distinct.size <= k else kmeans_1d(np.sort(kept), k)
    centroids = np.unique(centroids.astype(w.dtype))     # sorted, in the stored precision
    idx = nearest(flat, centroids.astype(np.float64))
    if prune_threshold > 0:
        zero = np.searchsorted(centroids, 0.0)
        centroids = np.insert(centroids, zero, w.dtype.type(0))
        idx = np.where(keep, idx + (idx >= zero), zero)
    used = np.unique(idx)                                # drop values no weight uses
    codebook = centroids[used]
    indices = np.searchsorted(used, idx).astype(np.uint8).reshape(w.shape)
    return Quantized(codebook, indices, pruned)


def kmeans_1d(sorted_values: np.ndarray, k: int) -> np.ndarray:
    """k centroids of sorted 1-D data by ``kmeans2`` from the cube-root start."""
    n = sorted_values.size
    sample = sorted_values[np.linspace(0, n - 1, min(n, SAMPLE)).round().astype(np.int64)]
    with warnings.catch_warnings():
        # an empty cluster keeps its start value and is dropped after assignment
        warnings.simplefilter("ignore")
        centroids, _ = kmeans2(sample, cube_root_start(sorted_values, k), iter=ITERATIONS,
                               minit="matrix", missing="warn")
    return centroids


def cube_root_start(values: np.ndarray, k: int) -> np.ndarray:
    """k points spread with density proportional to (density of values)**(1/3)."""
    counts, edges = np.histogram(values, bins=HISTOGRAM_BINS)
    cdf = np.concatenate([[0.0], np.cumsum(np.cbrt(counts.astype(np.float64)))])
    return np.interp((np.arange(k) + 0.5) / k, cdf / cdf[-1], edges)


def nearest(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of the nearest value of the sorted ``codebook`` for each value."""
    if codebook.size == 0:
        return np.zeros(values.shape, np.int64)
    return np.searchsorted((codebook[1:] + codebook[:-1]) / 2, values)


def relative_error(weights: np.ndarray, quantized: np.ndarray) -> float:
    """||W - Q|| / ||W|| (Frobenius; 0 for an all-zero W quantized exactly)."""
    w = np.asarray(weights, np.float64)
    norm = np.linalg.norm(w)
    diff = np.linalg.norm(w - np.asarray(quantized, np.float64))
    return float(diff / norm) if norm > 0 else float(diff > 0)
