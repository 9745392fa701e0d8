"""Which hidden units of a width space go first, and what removing them costs.

A consumer c of a space reads y = W z + b; unit j of the space is the block of
columns J_j of z (one per time offset).  Damage is measured as in
:mod:`.prune`: the mean squared error of y per output, in units of each output's
standard deviation, i.e. with W scaled to D W, D = diag(1 / std(y)) / sqrt(out_dim).

* **without refit** the removed units R are replaced by their means; unit j alone
  costs s_j = sum_{col in J_j} ||D W_col||^2 Var(z_col) and units go in order of s_j
  (:func:`diagonal_scores`);
* **with refit** the kept columns K are refit by least squares on the calibration
  inputs, which leaves the error covariance W_R S_R W_R^T with S_R = ((C^{-1})_{RR})^{-1},
  the part of z_R that z_K does not predict (C = Cov(z)).  Units go greedily, the
  cheapest next one given those already gone (Optimal Brain Surgeon, Hassibi & Stork
  1993, for blocks of columns as in OBC, Frantar & Alistarh 2022): with W' the current
  refit weights and P = (C_KK)^{-1} (the kept columns), removing unit j costs
  tr(D W'_J (P_JJ)^{-1} W'_J^T D) summed over consumers, and then
  W' <- W' - W'_J (P_JJ)^{-1} P_{J,:} and P <- P - P_{:,J} (P_JJ)^{-1} P_{J,:}.
  Correlated units are cheap to remove: the others take over their contribution.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from ..nnet3 import Nnet
from .lowrank import RIDGE
from .units import weight
from .widths import Space


@dataclass
class Ranking:
    """The units of one space in removal order and the damage along the way."""
    order: np.ndarray    # unit indices, first removed first
    lost: np.ndarray     # lost[r]: damage with order[:r] removed (inf past the floor)
    total: float         # damage of removing every unit without refit

    @property
    def dim(self) -> int:
        return len(self.order)

    def kept(self, width: int) -> np.ndarray:
        """The ``width`` units removed last, in their original order."""
        return np.sort(self.order[self.dim - width:])

    def damage(self, width: int) -> float:
        return float(self.lost[self.dim - width])


def diagonal_scores(nnet: Nnet, space: Space, stats) -> np.ndarray:
    """s_j: the damage of replacing unit j alone by its mean (see the module docstring)."""
    scores = np.zeros(space.dim)
    for c in space.consumers:
        w = weight(nnet.components[nnet.node(c.node).component]).astype(np.float64)
        st = stats[c.node]
        energy = ((w * st.inverse_std[:, None]) ** 2).sum(0) * np.diag(st.covariance)
        for s in c.starts:
            scores += energy[s:s + space.dim] / w.shape[0]
    return scores


def diagonal_ranking(scores: np.ndarray) -> Ranking:
    """Units in order of their own score; lost[r] the sum of the r smallest."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="stable")
    return Ranking(order, np.concatenate([[0.0], np.cumsum(scores[order])]),
                   float(scores.sum()))


def refit_ranking(nnet: Nnet, space: Space, stats, floor: int = 1,
                  progress: bool = False) -> Ranking:
    """The greedy order under least-squares refit (module docstring), down to ``floor``
    units; the units left at the floor follow in index order with infinite damage."""
    consumers = []
    for c in space.consumers:
        w = weight(nnet.components[nnet.node(c.node).component]).astype(np.float64)
        st = stats[c.node]
        cov = st.covariance
        n = len(cov)
        inv = np.linalg.inv(cov + RIDGE * np.trace(cov) / max(n, 1) * np.eye(n))
        cols = np.asarray(c.starts)[:, None] + np.arange(space.dim)[None, :]  # offsets x dim
        consumers.append(_Surgeon(w * st.inverse_std[:, None] / np.sqrt(w.shape[0]), inv,
                                  cols))
    alive = np.ones(space.dim, dtype=bool)
    order, lost = [], [0.0]
    steps = range(space.dim - max(1, min(floor, space.dim)))
    if progress:
        from tqdm import tqdm
        steps = tqdm(steps, desc=f"rank {space.name}", unit="unit", file=sys.stderr,
                     leave=False)
    for step in steps:
        cost = sum(c.costs(alive) for c in consumers)
        cost[~alive] = np.inf
        j = int(np.argmin(cost))
        order.append(j)
        lost.append(lost[-1] + max(float(cost[j]), 0.0))
        alive[j] = False
        for c in consumers:
            c.remove(j)
            if step % 32 == 31:
                c.flush(alive)
    rest = np.nonzero(alive)[0]
    return Ranking(np.concatenate([np.asarray(order, dtype=np.int64), rest]),
                   np.concatenate([lost, np.full(len(rest), np.inf)]),
                   float(diagonal_scores(nnet, space, stats).sum()))


class _Surgeon:
    """One consumer's D W' and P = (C_KK)^{-1} under removals.  P is kept as
    P0 - U V (the removals since the last :meth:`flush`, a rank-2k update each), so a
    step costs O(n k) instead of a pass over the n x n matrix; :meth:`flush` applies
    them in one product and drops the removed units' columns."""

    def __init__(self, wd: np.ndarray, inv: np.ndarray, cols: np.ndarray):
        self.wd, self.inv, self.cols = wd, inv, cols    # cols: offsets x dim, -1 once gone
        self.u: list[np.ndarray] = []                   # n x k blocks
        self.v: list[np.ndarray] = []                   # k x n blocks

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` of the current P."""
        rows = self.inv[idx]
        if self.u:
            rows = rows - np.hstack(self.u)[idx] @ np.vstack(self.v)
        return rows

    def costs(self, alive: np.ndarray) -> np.ndarray:
        """tr(D W'_J (P_JJ)^{-1} W'_J^T D) per unit (garbage for removed units)."""
        k = self.cols.shape[0]
        c = self.cols.T                                                  # dim x k
        blocks = self.inv[c[:, :, None], c[:, None, :]]                  # dim x k x k
        if self.u:
            u, v = np.hstack(self.u), np.vstack(self.v)
            blocks = blocks - np.einsum("dkr,rdl->dkl", u[c], v[:, c])
        blocks[~alive] = np.eye(k)
        wj = self.wd[:, c]                                               # out x dim x k
        gram = np.einsum("odk,odl->dkl", wj, wj)
        return np.einsum("dkk->d", np.linalg.solve(blocks, gram))

    def remove(self, j: int) -> None:
        cj = self.cols[:, j]
        rows = self._rows(cj)                                            # k x n
        a = np.linalg.solve(rows[:, cj], rows)
        self.wd = self.wd - self.wd[:, cj] @ a
        self.u.append(rows.T)
        self.v.append(a)

    def flush(self, alive: np.ndarray) -> None:
        inv = self.inv - np.hstack(self.u) @ np.vstack(self.v)
        self.u, self.v = [], []
        dead = self.cols[:, ~alive].ravel()
        live = np.ones(len(inv), dtype=bool)
        live[dead[dead >= 0]] = False
        idx = np.nonzero(live)[0]
        new_index = np.full(len(live), -1, dtype=np.int64)
        new_index[idx] = np.arange(len(idx))
        self.wd, self.inv = self.wd[:, idx], inv[np.ix_(idx, idx)]
        self.cols = np.where(self.cols >= 0, new_index[self.cols], -1)
