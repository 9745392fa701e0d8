"""Data-aware rounding onto a codebook: the error of each rounded column is fed forward
onto the columns not yet rounded (GPTQ: Frantar et al., ICLR 2023; the optimal brain
quantizer of Frantar & Alistarh, 2022, column by column).

A weight matrix W (rows = outputs) acts on inputs x with second moment H = E[x x^T]
(from calibration audio). Rounding W to Q costs the layer's output error
E||(W - Q) x||^2 = tr((W - Q) H (W - Q)^T). Nearest rounding minimises ||W - Q|| and
ignores H. Rounding column j to the codebook and then moving the columns j+1.. by the
least-squares correction -e_j H^-1[j, j+1:] / H^-1[j, j] (e_j the column's rounding
error) keeps the output error of each step minimal given the columns already fixed; with
U the upper Cholesky factor of H^-1 this is the update ``W[:, j+1:] -= (e_j / U[j, j])
U[j, j+1:]``. A diagonal H gives back nearest rounding exactly. The codebook (and so the
file format and size) is pack's own: only which value each weight takes changes.

:func:`input_moments` gathers H for every packed matrix from the network run on
calibration audio: the spliced input of an affine component, the taps of a TDNN one.
"""
from __future__ import annotations

import numpy as np

from ..nnet3 import Nnet
from .codebook import nearest

DAMPING = 0.01   # H + DAMPING * mean(diag H) I: a ridge for directions the audio barely spans


def error_feedback_indices(weights: np.ndarray, moment: np.ndarray, codebook: np.ndarray,
                           fixed: np.ndarray | None = None, damping: float = DAMPING
                           ) -> np.ndarray:
    """Codebook indices of ``weights`` (rows x cols) rounded column by column with the
    error fed forward under the input second moment ``moment`` (cols x cols).
    ``fixed`` (same shape, int, -1 = free) pins weights to given indices (pruned ones)."""
    w = np.array(weights, dtype=np.float64)
    cb = np.asarray(codebook, dtype=np.float64)
    n = w.shape[1]
    if moment.shape != (n, n):
        raise ValueError(f"input moment of shape {moment.shape} for a matrix with {n} columns")
    h = np.array(moment, dtype=np.float64)
    dead = np.diag(h) <= 0                  # inputs that never move: nothing to correct
    h[dead, dead] = 1.0
    h += damping * float(np.mean(np.diag(h))) * np.eye(n)
    u = np.linalg.cholesky(np.linalg.inv(h)).T           # upper: H^-1 = U^T U
    idx = np.empty(w.shape, dtype=np.int64)
    for j in range(n):
        col = nearest(w[:, j], cb)
        if fixed is not None:
            col = np.where(fixed[:, j] >= 0, fixed[:, j], col)
        idx[:, j] = col
        err = (w[:, j] - cb[col]) / u[j, j]
        w[:, j + 1:] -= np.outer(err, u[j, j + 1:])
    return idx


def output_error(weights: np.ndarray, quantized: np.ndarray, moment: np.ndarray) -> float:
    """tr(E H E^T) / tr(W H W^T), E = W - Q: the layer's relative output error (squared)."""
    w = np.asarray(weights, np.float64)
    e = w - np.asarray(quantized, np.float64)
    den = float(np.einsum("ij,jk,ik->", w, moment, w))
    return float(np.einsum("ij,jk,ik->", e, moment, e)) / den if den > 0 else 0.0


def input_moments(nnet: Nnet, calibration, components: set[str]) -> dict[str, np.ndarray]:
    """E[x x^T] of the vector each named component's weight matrix multiplies, over every
    frame the network computes on the calibration audio (a compress.calibrate.Calibration):
    the statistics data-aware compression gathers, a TDNN's of its spliced taps."""
    from ..compress.calibrate import MomentAccumulator
    from ..nnet3.components import TdnnComponent
    wanted = {n.component: (n.name, "taps" if isinstance(c, TdnnComponent) else "input")
              for n, c in nnet.component_nodes() if n.component in components}
    acc = MomentAccumulator(wanted, set())
    calibration.run(nnet, acc)
    return {name: acc.moment(name) for name in wanted if name in acc.sums}
