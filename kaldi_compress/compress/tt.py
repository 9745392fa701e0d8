"""Tensor-train (TT) matrices: TT-SVD and its error (Oseledets 2011; Novikov et al. 2015).

A matrix W (M x N) with M = m_1...m_d and N = n_1...n_d, rows indexed i = (i_1..i_d)
and columns j = (j_1..j_d) row-major, is a TT-matrix with cores G_k of shape
(r_{k-1}, m_k, n_k, r_k), r_0 = r_d = 1, when

    W[i, j] = G_1[:, i_1, j_1, :] G_2[:, i_2, j_2, :] ... G_d[:, i_d, j_d, :].

Its parameters are sum_k r_{k-1} m_k n_k r_k.  TT-SVD reshapes W into the d-way tensor
A[(i_1 j_1), ..., (i_d j_d)] and sweeps left to right: at step k the unfolding
C_k (r_{k-1} m_k n_k x rest) is truncated to rank r_k by its SVD, C_k ~= U S V^T;
G_k = U and S V^T carries on.  The cores are left-orthogonal, so the errors of the
steps are orthogonal and

    ||W - TT||_F^2 = sum_k sum_{i > r_k} s_{k,i}^2    (<= is the theorem; = up to rounding),

and truncating each step at delta = eps / sqrt(d-1) * ||W||_F gives
||W - TT||_F <= eps ||W||_F.  The rank of the k-th unfolding, hence r_k, is at most
min(prod_{l<=k} m_l n_l, prod_{l>k} m_l n_l) (the "full" TT rank: exact).

Each step's truncated SVD is taken from the eigendecomposition of the Gram matrix of
the unfolding's short side (LAPACK syevd on C C^T or C^T C; only the r largest pairs,
syevr, when the rank is capped and no error bound needs the whole spectrum); the
discarded energy is ||C||_F^2 minus the kept eigenvalues, and the remainder U^T C is
one product, so V is never formed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import reduce
from itertools import product

import numpy as np
import scipy.linalg

from ..errors import KaldiCompressError


def _prod(xs) -> int:
    return int(reduce(lambda a, b: a * b, xs, 1))


@dataclass(frozen=True)
class TTShape:
    """Row modes (m_1..m_d) and column modes (n_1..n_d) of a TT-matrix."""
    out_modes: tuple[int, ...]
    in_modes: tuple[int, ...]

    def __post_init__(self):
        if len(self.out_modes) != len(self.in_modes) or not self.out_modes:
            raise KaldiCompressError(f"TT shape {self}: need as many output as input modes")
        if min(self.out_modes + self.in_modes) < 1:
            raise KaldiCompressError(f"TT shape {self}: modes must be positive")

    @property
    def d(self) -> int:
        return len(self.out_modes)

    @property
    def rows(self) -> int:
        return _prod(self.out_modes)

    @property
    def cols(self) -> int:
        return _prod(self.in_modes)

    @property
    def modes(self) -> tuple[int, ...]:
        """m_k n_k: the mode sizes of the TT tensor."""
        return tuple(m * n for m, n in zip(self.out_modes, self.in_modes))

    def full_ranks(self) -> tuple[int, ...]:
        """(r_0, ..., r_d) at which the TT is exact for every matrix."""
        s = self.modes
        inner = [min(_prod(s[:k]), _prod(s[k:])) for k in range(1, self.d)]
        return (1, *inner, 1)

    def params(self, ranks) -> int:
        """sum_k r_{k-1} m_k n_k r_k."""
        return sum(ranks[k] * s * ranks[k + 1] for k, s in enumerate(self.modes))

    def __str__(self) -> str:
        return "x".join(map(str, self.out_modes)) + "," + "x".join(map(str, self.in_modes))

    @classmethod
    def parse(cls, text: str) -> "TTShape":
        """``m1xm2x..,n1xn2x..`` (output modes, input modes), e.g. ``24x32,8x8``."""
        try:
            out, inp = text.split(",")
            return cls(tuple(int(v) for v in out.split("x")), tuple(int(v) for v in inp.split("x")))
        except ValueError:
            raise KaldiCompressError(f"--tt-shape={text}: expected m1xm2..,n1xn2.. "
                                     "(e.g. 24x32,8x8)") from None


@dataclass
class TTMatrix:
    """Cores G_k (r_{k-1}, m_k, n_k, r_k) and what TT-SVD discarded at each step."""
    cores: list[np.ndarray]
    discarded: list[float] = field(default_factory=list)  # sum of dropped s^2, per step
    norm2: float = 0.0                                     # ||W||_F^2 of the input

    @property
    def shape(self) -> TTShape:
        return TTShape(tuple(g.shape[1] for g in self.cores), tuple(g.shape[2] for g in self.cores))

    @property
    def ranks(self) -> tuple[int, ...]:
        return (1, *(g.shape[3] for g in self.cores))

    @property
    def params(self) -> int:
        return sum(g.size for g in self.cores)

    @property
    def error_bound(self) -> float:
        """sqrt(sum of discarded s^2 over the unfoldings), the TT-SVD bound on ||W - TT||_F."""
        return math.sqrt(max(sum(self.discarded), 0.0))

    @property
    def relative_error(self) -> float:
        return self.error_bound / math.sqrt(self.norm2) if self.norm2 > 0 else 0.0

    def to_matrix(self) -> np.ndarray:
        """The dense W (M x N) the cores represent."""
        return tt_to_matrix(self.cores)


def tt_to_matrix(cores: list[np.ndarray], einsum=np.einsum) -> np.ndarray:
    """W[i, j] = G_1[:, i_1, j_1, :] ... G_d[:, i_d, j_d, :] as a dense M x N matrix
    (``einsum=torch.einsum`` for torch cores: then autograd reaches the cores)."""
    t = cores[0][0]                                  # (m1, n1, r1)
    for g in cores[1:]:
        # t: (M_k, N_k, r) ; g: (r, m, n, r') -> (M_k m, N_k n, r')
        t = einsum("abr,rcds->acbds", t, g)
        t = t.reshape(t.shape[0] * t.shape[1], t.shape[2] * t.shape[3], t.shape[4])
    return t[:, :, 0]


def to_tt_tensor(w: np.ndarray, shape: TTShape) -> np.ndarray:
    """W (M x N) as the d-way tensor A[(i_1 j_1), ..., (i_d j_d)]."""
    d = shape.d
    t = np.asarray(w).reshape(shape.out_modes + shape.in_modes)
    order = [a for k in range(d) for a in (k, d + k)]
    return t.transpose(order).reshape(shape.modes)


def _gram_eig(c: np.ndarray, top: int | None = None) -> tuple[np.ndarray, np.ndarray, bool, float]:
    """Eigenvalues (descending, = s_i^2) and eigenvectors of the Gram matrix of the
    short side of C, whether C is wide (the vectors are then C's left ones), and
    ||C||_F^2.  With ``top``, only the ``top`` largest pairs (LAPACK syevr)."""
    wide = c.shape[0] <= c.shape[1]
    gram = c @ c.T if wide else c.T @ c
    total = float(np.trace(gram))
    n = len(gram)
    if top is not None and top < n // 4:
        lam, vec = scipy.linalg.eigh(gram, overwrite_a=True, check_finite=False, driver="evr",
                                     subset_by_index=[n - top, n - 1])
    else:
        lam, vec = scipy.linalg.eigh(gram, overwrite_a=True, check_finite=False, driver="evd")
    return np.maximum(lam[::-1], 0.0), vec[:, ::-1], wide, total


def _truncate(c: np.ndarray, eig, rank: int | None, delta2: float | None
              ) -> tuple[np.ndarray, np.ndarray, float]:
    """(U, U^T C, discarded) for the best approximation U U^T C of C with U orthonormal:
    the smallest r whose discarded energy sum_{i>r} s_i^2 is <= delta2, capped at ``rank``."""
    lam, vec, wide, total = eig
    kept = np.concatenate([[0.0], np.cumsum(lam)])
    tail = np.maximum(total - kept, 0.0)            # tail[r] = sum_{i>r} s_i^2
    r = len(lam)
    if delta2 is not None:
        r = int(np.argmax(tail <= delta2)) if (tail <= delta2).any() else len(lam)
    if rank is not None:
        r = min(r, rank)
    r = max(r, 1)
    if wide:
        u = vec[:, :r]
    else:  # U spans C V_r: orthonormalise (exact even where s_i is tiny)
        u, _ = np.linalg.qr(c @ vec[:, :r])
    return u, u.T @ c, float(tail[r])


def tt_svd(w: np.ndarray, shape: TTShape, max_rank: int | list[int] | None = None,
           eps: float | None = None) -> TTMatrix:
    """TT-SVD (Oseledets 2011, Alg. 1) of W into ``shape``.

    ``max_rank``: a cap on every r_k (or a list r_1..r_{d-1}); ``eps``: truncate each
    unfolding at delta = eps / sqrt(d-1) ||W||_F, so that ||W - TT||_F <= eps ||W||_F.
    Neither: exact (full TT ranks).  Computed in float64."""
    return tt_svd_many(w, shape, [max_rank], eps)[0]


def tt_svd_many(w: np.ndarray, shape: TTShape, max_ranks: list, eps: float | None = None
                ) -> list[TTMatrix]:
    """:func:`tt_svd` for several rank caps, sharing the first unfolding's decomposition."""
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (shape.rows, shape.cols):
        raise KaldiCompressError(f"TT shape {shape} is {shape.rows}x{shape.cols}, "
                                 f"the matrix is {w.shape[0]}x{w.shape[1]}")
    if eps is not None and not 0 <= eps < 1:
        raise KaldiCompressError(f"TT relative error bound must be in [0, 1), got {eps}")
    d = shape.d
    norm2 = float(np.vdot(w, w))
    delta2 = None if eps is None else (eps ** 2 / max(d - 1, 1)) * norm2
    first = to_tt_tensor(w, shape).reshape(shape.modes[0], -1)
    only = _rank_caps(max_ranks[0], d)[0] if len(max_ranks) == 1 and eps is None else None
    eig0 = _gram_eig(first, only) if d > 1 else None
    out = []
    for max_rank in max_ranks:
        caps = _rank_caps(max_rank, d)
        c, cores, discarded, r_prev = first, [], [], 1
        for k in range(d - 1):
            c = c.reshape(r_prev * shape.modes[k], -1)
            eig = eig0 if k == 0 else _gram_eig(c, caps[k] if delta2 is None else None)
            u, c, lost = _truncate(c, eig, caps[k], delta2)
            r = u.shape[1]
            cores.append(u.reshape(r_prev, shape.out_modes[k], shape.in_modes[k], r))
            discarded.append(lost)
            r_prev = r
        cores.append(c.reshape(r_prev, shape.out_modes[-1], shape.in_modes[-1], 1))
        out.append(TTMatrix(cores, discarded, norm2))
    return out


def _rank_caps(max_rank, d: int) -> list[int | None]:
    if max_rank is None:
        return [None] * (d - 1)
    if isinstance(max_rank, (int, np.integer)):
        if max_rank < 1:
            raise KaldiCompressError(f"TT rank must be positive, got {max_rank}")
        return [int(max_rank)] * (d - 1)
    caps = [int(r) for r in max_rank]
    if len(caps) != d - 1 or min(caps, default=1) < 1:
        raise KaldiCompressError(f"TT ranks {caps}: need {d - 1} positive ranks for {d} cores")
    return caps


# ---------------------------------------------------------------------------
# Choosing a factorization of the dimensions.

def factorizations(n: int, d: int, min_factor: int = 2) -> list[tuple[int, ...]]:
    """Every ordered way of writing n as a product of d factors >= min_factor."""
    if d == 1:
        return [(n,)] if n >= min_factor else []
    out = []
    for f in range(min_factor, n + 1):
        if n % f == 0:
            out.extend((f,) + rest for rest in factorizations(n // f, d - 1, min_factor))
    return out


def _imbalance(factors: tuple[int, ...]) -> float:
    """Spread of log factors around their mean (0 for equal factors)."""
    logs = np.log(factors)
    return float(np.abs(logs - logs.mean()).sum())


def _balanced(n: int, d: int, keep: int) -> list[tuple[int, ...]]:
    """The ``keep`` most balanced sorted d-factorizations of n."""
    cands = {tuple(sorted(f)) for f in factorizations(n, d)}
    return sorted(cands, key=_imbalance)[:keep]


def candidate_shapes(rows: int, cols: int, cores: tuple[int, ...] = (2, 3),
                     max_pad: float = 0.05, per_d: int = 2) -> list[tuple[TTShape, int]]:
    """TT shapes worth trying for a rows x cols matrix, with the rows each is padded to.

    For each number of cores d, the columns (never padded) and the rows are split into
    the ``per_d`` most balanced factorizations, paired so that the mode sizes m_k n_k are
    as even as possible (large m_k with small n_k).  Rows that do not factor well (a
    factor over twice rows^(1/d), e.g. 2616 = 2^3 x 3 x 109) are padded by at most
    ``max_pad`` to the size that factors best (2616 -> 2652 = 52 x 51).  Shapes whose
    TT cannot save parameters even at rank 1 are left out."""
    out: list[tuple[TTShape, int]] = []
    for d in cores:
        col_f = _balanced(cols, d, per_d)
        row_f = [(rows, f) for f in _balanced(rows, d, per_d)]
        if not row_f or max(row_f[0][1]) > 2 * rows ** (1 / d):
            padded = [(p, f) for p in range(rows + 1, int(rows * (1 + max_pad)) + 1)
                      for f in _balanced(p, d, 1)]
            padded.sort(key=lambda pf: (_imbalance(pf[1]), pf[0]))
            row_f = sorted(row_f + padded[:per_d], key=lambda pf: _imbalance(pf[1]))[:per_d]
        for (padded_rows_, rf), cf in product(row_f, col_f):
            shape = TTShape(tuple(sorted(rf, reverse=True)), tuple(sorted(cf)))
            if shape.params((1,) * (d + 1)) < rows * cols:
                out.append((shape, padded_rows_))
    return out


def padded_rows(w: np.ndarray, rows: int) -> np.ndarray:
    """W with zero rows appended up to ``rows``."""
    w = np.asarray(w, dtype=np.float64)
    if rows == w.shape[0]:
        return w
    return np.vstack([w, np.zeros((rows - w.shape[0], w.shape[1]))])


def rank_grid(full: int, limit: int | None = None) -> list[int]:
    """Ranks 1..full on a roughly geometric grid (every rank up to 8, then ~12% steps)."""
    top = full if limit is None else min(full, limit)
    ranks, r = [], 1
    while r <= top:
        ranks.append(r)
        r = r + 1 if r < 8 else int(math.ceil(r * 1.125))
    if ranks[-1] != top:
        ranks.append(top)
    return ranks
