"""Choosing one option per unit to meet a global parameter budget.

Each unit u offers options (parameters p_u, damage e_u), priced by the methods
(an SVD rank k: p_u(k), e_u(k); a TT; keeping the unit as it is).  For SVD the
damage is the energy the truncation discards, e_u(k) = c_u sum_{i>k} s_i^2, times
an optional per-unit weight.  Weights-only, c_u = 1 / sum_i s_i^2 (the relative
squared error of the weights); data-aware, the s_i come from the output-weighted,
input-whitened SVD and c_u = 1 / (number of outputs): the mean squared output error
in units of each output's standard deviation, comparable across layers.  We
minimise sum_u e_u(k_u) subject to sum_u p_u(k_u) <= budget by Lagrangian
relaxation: for a multiplier lam each unit independently takes
argmin_k e_u(k) + lam p_u(k); bisection finds the smallest lam that meets the
budget, and leftover parameters are then spent greedily where they remove the
most damage per parameter.  Unlike a plain greedy, this handles units whose
factorization only pays below a break-even rank (keep-as-is is an option).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import KaldiCompressError


@dataclass
class Option:
    rank: int            # full_rank means "leave unchanged"
    params: int
    damage: float
    tag: Any = None      # another method's choice (e.g. a TT factorization); None: SVD rank


def choose(table: list[list[Option]], budget: int, fixed_params: int) -> list[Option]:
    """One option per unit (any options, e.g. of several methods) so that fixed_params +
    sum params <= budget with the least total damage (Lagrangian relaxation, then the
    leftover spent greedily)."""
    floor = fixed_params + sum(min(o.params for o in opts) for opts in table)
    if floor > budget:
        raise KaldiCompressError(f"cannot reach {budget} parameters: compressing every layer "
                                 f"as far as allowed still leaves {floor}")

    # options as (units x max options) arrays, padded with infinite damage
    width = max(len(opts) for opts in table)
    params = np.zeros((len(table), width))
    damage = np.full((len(table), width), np.inf)
    for i, opts in enumerate(table):
        params[i, :len(opts)] = [o.params for o in opts]
        damage[i, :len(opts)] = [o.damage for o in opts]
    rows = np.arange(len(table))

    def pick(lam: float) -> np.ndarray:
        """Per unit, the first option minimising (damage + lam params, params)."""
        cost = damage + lam * params
        tied = np.where(cost == cost.min(axis=1, keepdims=True), params, np.inf)
        return tied.argmin(axis=1)

    def total(idx: np.ndarray) -> int:
        return fixed_params + int(params[rows, idx].sum())

    lo, hi = 0.0, 1.0
    while total(pick(hi)) > budget:
        hi *= 4.0
        if hi > 1e12:
            break
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if total(pick(mid)) > budget:
            lo = mid
        else:
            hi = mid
    idx = pick(hi)
    if total(idx) > budget:  # ties at the boundary: take the cheapest options
        choice = [min(opts, key=lambda o: o.params) for opts in table]
    else:
        choice = [opts[j] for opts, j in zip(table, idx)]
    return _spend_leftover(table, choice, budget - fixed_params - sum(o.params for o in choice))


def _spend_leftover(table: list[list[Option]], choice: list[Option], slack: int) -> list[Option]:
    """Greedily move units to less-damaging options while the budget allows."""
    choice = list(choice)
    while True:
        best, best_gain = None, 0.0
        for i, opts in enumerate(table):
            cur = choice[i]
            for o in opts:
                extra = o.params - cur.params
                gain = cur.damage - o.damage
                if 0 < extra <= slack and gain > 0 and gain / extra > best_gain:
                    best, best_gain = (i, o), gain / extra
        if best is None:
            return choice
        i, o = best
        slack -= o.params - choice[i].params
        choice[i] = o
