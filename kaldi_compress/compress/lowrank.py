"""Truncated SVD factorizations of weight matrices.

For W (m x n) with SVD W = U diag(s) V^T (s descending), the best rank-k
approximation in Frobenius norm (Eckart-Young) is W_k = U_k diag(s_k) V_k^T and

    ||W - W_k||_F / ||W||_F = sqrt(sum_{i>k} s_i^2 / sum_i s_i^2).

Data-aware ("whitened") truncation minimises the error on actual inputs x instead,
with each output row weighted by d (e.g. 1 / its standard deviation on the data):
E||D (W - W_k) x||^2 = ||D (W - W_k) C^{1/2}||_F^2 with C = E[x x^T], D = diag(d).
Take the SVD of D W C^{1/2} = U diag(s) V^T; then
W_k = D^{-1} U_k diag(s_k) V_k^T C^{-1/2}, and the discarded s_i^2 are the weighted
output error.  LAPACK gesdd (numpy's default) computes the SVDs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Spectrum:
    """SVD of W (optionally whitened by an input second-moment matrix C).

    ``u``, ``s``, ``vt`` satisfy D W G = u diag(s) vt, where G = C^{1/2} and D =
    diag(``row_weight``) (identities when weights-only) and ``g_inv`` = G^{-1}.
    """
    u: np.ndarray
    s: np.ndarray
    vt: np.ndarray
    g_inv: np.ndarray | None = None
    row_weight: np.ndarray | None = None

    @property
    def energy(self) -> np.ndarray:
        return self.s.astype(np.float64) ** 2

    def discarded(self, k: int) -> float:
        """Squared error of the rank-k truncation (sum of the discarded s_i^2)."""
        return float(self.energy[k:].sum())

    def relative_error(self, k: int) -> float:
        total = float(self.energy.sum())
        return float(np.sqrt(self.discarded(k) / total)) if total > 0 else 0.0

    def rank_for_energy(self, threshold: float) -> int:
        """Kaldi's energy rule: the smallest k with sum_{i<k} s_i^2 >= threshold * total."""
        e = self.energy
        cum = np.cumsum(e)
        k = int(np.searchsorted(cum, threshold * cum[-1], side="left")) + 1
        return min(k, len(e))

    def factors(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(A, B) with W ~= B A, A = E^{-1} diag(sqrt s_k) V_k^T G^{-1} (k x n),
        B = D^{-1} U_k diag(sqrt s_k) E (m x k): the singular values are split evenly, as
        Kaldi's apply-svd does, and row i of A and column i of B have equal norms.

        Weights-only (G = D = I) both norms are sqrt(s_i) and E = I.  Whitened, G^{-1}
        and D^{-1} put the two factors on different scales (tdnn1 of the Korean model:
        RMS 1.16 and 0.006, as its MFCC inputs are large), and the diagonal E (the gauge
        B A leaves free) evens them: e_i = sqrt(|A_i| / |B_:i|) before it.  Fine-tuning
        needs that: Adam moves every weight by about its learning rate, 17% of 0.006."""
        r = np.sqrt(self.s[:k])
        a = r[:, None] * self.vt[:k]
        b = self.u[:, :k] * r[None, :]
        if self.g_inv is None and self.row_weight is None:
            return a, b
        if self.g_inv is not None:
            a = a @ self.g_inv
        if self.row_weight is not None:
            b = b / self.row_weight[:, None]
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=0)
        e = np.ones_like(na)
        ok = (na > 0) & (nb > 0)
        e[ok] = np.sqrt(na[ok] / nb[ok])
        return a / e[:, None], b * e[None, :]

    def projection(self, k: int) -> np.ndarray:
        """P (k x n) with orthonormal rows spanning the row space of the rank-k factor A."""
        a = self.vt[:k] if self.g_inv is None else self.vt[:k] @ self.g_inv
        if self.g_inv is None:
            return a
        q, _ = np.linalg.qr(a.T)
        return q.T


def spectrum(w: np.ndarray, second_moment: np.ndarray | None = None,
             row_weight: np.ndarray | None = None, ridge: float = 1e-6) -> Spectrum:
    """SVD of ``w`` (float64 internally), whitened by ``second_moment`` and with rows
    weighted by ``row_weight`` if given."""
    w = np.asarray(w, dtype=np.float64)
    if row_weight is not None:
        w = w * row_weight[:, None]
    if second_moment is None:
        u, s, vt = np.linalg.svd(w, full_matrices=False)
        return Spectrum(u, s, vt, None, row_weight)
    g, g_inv = sqrt_and_inverse(second_moment, ridge)
    u, s, vt = np.linalg.svd(w @ g, full_matrices=False)
    return Spectrum(u, s, vt, g_inv, row_weight)


def sqrt_and_inverse(c: np.ndarray, ridge: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric C^{1/2} and C^{-1/2} of a PSD matrix, eigenvalues floored at
    ``ridge`` times the mean eigenvalue."""
    c = np.asarray(c, dtype=np.float64)
    c = 0.5 * (c + c.T)
    lam, q = np.linalg.eigh(c)
    floor = ridge * max(float(lam.mean()), 1e-30)
    lam = np.maximum(lam, floor)
    return (q * np.sqrt(lam)) @ q.T, (q / np.sqrt(lam)) @ q.T


RIDGE = 1e-8    # relative ridge (times the mean variance) of every least-squares refit


def regression(w: np.ndarray, cov: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """W Cov(t, x) Cov(x)^{-1}: the least-squares map from x to W t (``cross`` =
    Cov(t, x)), with a ridge of RIDGE times the mean variance of x."""
    n = len(cov)
    return np.linalg.solve(cov + RIDGE * np.trace(cov) / max(n, 1) * np.eye(n), (w @ cross).T).T


def least_squares_right(w: np.ndarray, p: np.ndarray,
                        second_moment: np.ndarray | None = None) -> np.ndarray:
    """B minimising ||D (W - B P) C^{1/2}||_F for fixed P with orthonormal rows and any
    diagonal D > 0 (each row is its own least-squares problem):
    B = W C P^T (P C P^T)^{-1}  (= W P^T when C is the identity)."""
    if second_moment is None:
        return w @ p.T
    cp = second_moment @ p.T
    return np.linalg.solve((p @ cp).T, (w @ cp).T).T
