"""Data-aware TT initialisation: cores fitted to a layer's outputs on calibration audio.

For a layer y = W x (+ b) whose input has second moment C = E[x x^T] (the covariance,
x centred, when the layer has a bias: the bias then absorbs the mean), the output error
of a TT-matrix T in place of W is

    E||(W - T) x||^2 = tr((W - T) C (W - T)^T) = ||(W - T) C^{1/2}||_F^2.

As for data-aware SVD (:mod:`.lowrank`), the fit whitens: TT-SVD of W C^{1/2}, then back
by C^{-1/2}.  But a dense C^{-1/2} on the right would destroy the TT format, so C is
replaced by its nearest Kronecker product over the input modes (j = (j_1..j_d) row-major),

    C ~= C_1 (x) ... (x) C_d,   C_k: n_k x n_k,   G_k = C_k^{1/2},

whose square root G = G_1 (x) ... (x) G_d is a TT-matrix of rank 1.  Then

    T = TT-SVD(W G) (G_1^{-1} (x) ... (x) G_d^{-1})

has the same shape and ranks as TT-SVD(W): core k of TT-SVD(W G), G~_k, becomes
G'_k[a, i, j, b] = sum_j' G~_k[a, i, j', b] (G_k^{-1})[j', j].  TT-SVD is quasi-optimal in
the Kronecker-whitened metric, not in the true one, so the data-aware cores are kept only
when their output error on the calibration statistics (true C) is below the weights-only
cores' (never worse on that data).  With a bias, b' = b + (W - T) mu, mu = E[x], which
makes the error of the mean zero.

Nearest Kronecker product (Van Loan & Pitsianis 1993): min ||C - (x)_k C_k||_F by
alternating least squares, C_k := <C, (x)_{l != k} C_l>_{other modes} / prod_{l != k} ||C_l||_F^2,
started from the partial traces; the factors are symmetrised and their eigenvalues floored
(:func:`.lowrank.sqrt_and_inverse`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from string import ascii_letters

import numpy as np

from ..nnet3 import Nnet
from .calibrate import Calibration, Moments, MomentAccumulator
from .lowrank import sqrt_and_inverse
from .tt import TTMatrix, TTShape, padded_rows, tt_svd_many
from .units import offsets


def kronecker_factors(c: np.ndarray, modes: tuple[int, ...], sweeps: int = 3) -> list[np.ndarray]:
    """C_1..C_d (n_k x n_k) with C ~= C_1 (x) ... (x) C_d (see the module docstring)."""
    d = len(modes)
    t = np.asarray(c, np.float64).reshape(modes + modes)
    rows, cols = ascii_letters[:d], ascii_letters[d:2 * d]
    factors = []
    for k in range(d):          # partial traces: the other modes' row and column tied
        tied = "".join(cols[k] if l == k else rows[l] for l in range(d))
        factors.append(np.einsum(f"{rows}{tied}->{rows[k]}{cols[k]}", t))
    for _ in range(sweeps if d > 1 else 0):
        for k in range(d):
            others = [l for l in range(d) if l != k]
            spec = f"{rows}{cols}," + ",".join(rows[l] + cols[l] for l in others) \
                + f"->{rows[k]}{cols[k]}"
            f = np.einsum(spec, t, *[factors[l] for l in others], optimize=True)
            norm2 = float(np.prod([np.vdot(factors[l], factors[l]) for l in others]))
            factors[k] = f / max(norm2, 1e-300)
    return [0.5 * (f + f.T) for f in factors]


def whitened_tt(w: np.ndarray, shape: TTShape, ranks: tuple[int, ...],
                factors: list[np.ndarray]) -> TTMatrix:
    """TT-SVD of W (G_1 (x) ... (x) G_d) at ``ranks``, mapped back by the G_k^{-1}."""
    roots = [sqrt_and_inverse(f) for f in factors]
    g = roots[0][0]
    for r in roots[1:]:
        g = np.kron(g, r[0])
    tt = tt_svd_many(w @ g, shape, [list(ranks[1:-1])])[0]
    cores = [np.einsum("aipb,pj->aijb", core, inv) for core, (_, inv) in zip(tt.cores, roots)]
    return TTMatrix(cores, tt.discarded, tt.norm2)


def output_error(w: np.ndarray, approx: np.ndarray, c: np.ndarray) -> float:
    """tr(E C E^T), E = W - approx: the mean squared output error on inputs with moment C."""
    e = w - approx
    return float(np.einsum("ij,ij->", e @ c, e))


@dataclass
class DataFit:
    """The cores kept for one layer, its new bias, and the relative output errors
    sqrt(tr(E C E^T) / tr(W C W^T)) of both fits on the calibration statistics."""
    tt: TTMatrix
    bias: np.ndarray | None
    error: float                 # of the cores kept
    weights_only_error: float
    data_aware: bool             # whether the data-aware cores were kept


def fit_layer(w: np.ndarray, b: np.ndarray | None, tt: TTMatrix, padded: int,
              stats: Moments) -> DataFit:
    """The better (on ``stats``) of ``tt`` (TT-SVD of W) and the data-aware TT of the same
    shape and ranks; ``b``: the layer's bias (None: no bias, fit on the second moment)."""
    w = np.asarray(w, np.float64)
    c = stats.moment if b is None else stats.covariance()
    shape = tt.shape
    data = whitened_tt(padded_rows(w, padded), shape, tt.ranks,
                       kronecker_factors(c, shape.in_modes))
    ref = max(output_error(w, np.zeros_like(w), c), 1e-300)
    errs = [output_error(w, t.to_matrix()[:len(w)], c) for t in (tt, data)]
    best = data if errs[1] < errs[0] else tt
    new_bias = None if b is None else \
        np.asarray(b, np.float64) + (w - best.to_matrix()[:len(w)]) @ stats.mean
    return DataFit(best, new_bias, float(np.sqrt(min(errs) / ref)),
                   float(np.sqrt(errs[0] / ref)), best is data)


def input_moments(nnet: Nnet, calibration: Calibration, nodes: list[str]) -> dict[str, Moments]:
    """E[x x^T] and E[x] of each node's input as its matrix reads it (a TdnnComponent's
    spliced taps), over the calibration audio, with the calibration's shrinkage."""
    wanted = {n: (n, "taps" if len(offsets(nnet.components[nnet.node(n).component])) > 1
                  else "input") for n in nodes}
    acc = MomentAccumulator(wanted, set())
    calibration.run(nnet, acc)
    return {n: acc.moments(n).shrunk(calibration.shrinkage) for n in nodes if n in acc.sums}


def with_fit(choice, fit: DataFit):
    """A TT choice (:class:`.tt_compress.TTChoice`) carrying the kept cores and bias."""
    return replace(choice, tt=fit.tt, bias=fit.bias, data_fit=fit)
