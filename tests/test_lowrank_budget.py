"""compress.lowrank and compress.budget on their own: the math their docstrings state."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from kaldi_compress.compress.budget import Option, choose
from kaldi_compress.compress.lowrank import least_squares_right, spectrum, sqrt_and_inverse
from kaldi_compress.errors import KaldiCompressError

RNG = np.random.default_rng(7)


def test_truncation_error_is_eckart_young():
    w = RNG.standard_normal((40, 30))
    spec = spectrum(w)
    for k in (1, 5, 29, 30):
        a, b = spec.factors(k)
        assert a.shape == (k, 30) and b.shape == (40, k)
        err = np.linalg.norm(w - b @ a) / np.linalg.norm(w)
        assert err == pytest.approx(spec.relative_error(k), abs=1e-12)
        # the singular values are split evenly: both factors carry sqrt(s)
        assert np.allclose(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=0))


def test_whitened_truncation_error_is_the_discarded_energy_on_the_data():
    w = RNG.standard_normal((20, 16))
    x = RNG.standard_normal((16, 500)) * np.linspace(0.1, 3.0, 16)[:, None]
    c = x @ x.T / x.shape[1]
    d = RNG.uniform(0.5, 2.0, 20)
    spec = spectrum(w, second_moment=c, row_weight=d, ridge=1e-12)
    for k in (2, 8, 15):
        a, b = spec.factors(k)
        err = np.mean(np.sum((d[:, None] * ((w - b @ a) @ x)) ** 2, axis=0))
        assert err == pytest.approx(spec.discarded(k), rel=1e-8)
        # the free diagonal gauge evens the factors: row i of A, column i of B
        assert np.allclose(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=0))


def test_whitened_factors_are_on_one_scale_however_large_the_inputs():
    """Inputs 100x larger (MFCC-like): B A is still W_k, and the factors' RMS differ only
    by their shapes (sqrt of fan-in), not by the inputs' scale."""
    w = RNG.standard_normal((30, 20)) * 0.01
    x = RNG.standard_normal((20, 400)) * 100.0
    spec = spectrum(w, second_moment=x @ x.T / 400, ridge=1e-12)
    a, b = spec.factors(6)
    row, col = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=0)
    assert np.allclose(row, col) and np.all(row > 0)
    even = (spec.u[:, :6] * spec.s[:6]) @ spec.vt[:6] @ spec.g_inv    # W_k, unsplit
    assert np.allclose(b @ a, even, rtol=1e-10, atol=1e-14)
    rms = [np.sqrt(np.mean(f ** 2)) * np.sqrt(n) for f, n in ((a, 20), (b, 30))]
    assert rms[0] == pytest.approx(rms[1])


def test_rank_for_energy_is_the_smallest_rank_reaching_the_threshold():
    spec = spectrum(RNG.standard_normal((12, 10)))
    cum = np.cumsum(spec.energy) / spec.energy.sum()
    for t in (0.1, 0.5, 0.9, 0.999, 1.0):
        k = spec.rank_for_energy(t)
        assert cum[k - 1] >= t - 1e-12 and (k == 1 or cum[k - 2] < t)


def test_sqrt_and_inverse():
    x = RNG.standard_normal((8, 100))
    c = x @ x.T / 100
    g, g_inv = sqrt_and_inverse(c, ridge=1e-12)
    assert np.allclose(g @ g, c) and np.allclose(g @ g_inv, np.eye(8))


def test_least_squares_right_is_the_minimiser():
    w = RNG.standard_normal((10, 12))
    p = np.linalg.qr(RNG.standard_normal((12, 4)))[0].T
    x = RNG.standard_normal((12, 300))
    c = x @ x.T / 300
    b = least_squares_right(w, p, c)
    ref = np.linalg.lstsq((p @ x).T, (w @ x).T, rcond=None)[0].T
    assert np.allclose(b, ref)
    assert np.allclose(least_squares_right(w, p), w @ p.T)


def _table(n_units: int, n_opts: int) -> list[list[Option]]:
    table = []
    for _ in range(n_units):
        params = np.sort(RNG.integers(10, 200, n_opts))[::-1]
        damage = np.sort(RNG.uniform(0, 5, n_opts))
        damage[0] = 0.0
        table.append([Option(i, int(p), float(dm))
                      for i, (p, dm) in enumerate(zip(params, damage))])
    return table


def _optimum(table: list[list[Option]], budget: int, fixed: int) -> float:
    return min(sum(o.damage for o in combo) for combo in itertools.product(*table)
               if fixed + sum(o.params for o in combo) <= budget)


def test_choose_respects_the_budget():
    for _ in range(20):
        table, fixed = _table(4, 4), 50
        lo = fixed + sum(min(o.params for o in t) for t in table)
        hi = fixed + sum(max(o.params for o in t) for t in table)
        budget = int(RNG.integers(lo, hi + 1))
        choice = choose(table, budget, fixed)
        assert fixed + sum(o.params for o in choice) <= budget
        assert all(o in t for o, t in zip(choice, table))
        assert sum(o.damage for o in choice) >= _optimum(table, budget, fixed) - 1e-12
    assert sum(o.damage for o in choose(table, hi, fixed)) == 0.0


def test_choose_is_optimal_at_every_lagrangian_budget():
    """A minimiser of damage + lam * params is optimal among choices with no more params
    (Everett's theorem), so at the budget it spends choose() must reach the exhaustive optimum."""
    for _ in range(50):
        table, fixed = _table(4, 5), 50
        lam = float(RNG.uniform(0.001, 0.2))
        budget = fixed + sum(min(t, key=lambda o: (o.damage + lam * o.params, o.params)).params
                             for t in table)
        choice = choose(table, budget, fixed)
        assert sum(o.damage for o in choice) == pytest.approx(_optimum(table, budget, fixed),
                                                              abs=1e-12)


def test_choose_rejects_an_unreachable_budget():
    table = _table(3, 3)
    floor = 50 + sum(min(o.params for o in t) for t in table)
    with pytest.raises(KaldiCompressError, match=f"still leaves {floor}"):
        choose(table, floor - 1, 50)
