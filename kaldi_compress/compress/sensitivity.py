"""How much a unit's local error grows by the time it reaches the network output.

A truncation's local damage e_u (mean squared output error of the unit, in units
of each output's standard deviation; see :func:`.rewrite.fit_unit`) is not what decoding
sees: errors in early layers pass through many more layers.  We measure the gain
g_u = E_out / e_u empirically: truncate one unit at a time to the rank whose
relative output error is about ``probe_error``, run the network on calibration
audio, and compare its outputs with the original's (E_out: mean squared output
difference over the output variance).  To first order, output damage is then
sum_u g_u e_u(k_u), which the budget minimises.
"""
from __future__ import annotations

import sys

import numpy as np

from ..nnet3 import Nnet
from .rewrite import Fit, apply_rank, fit_unit
from .units import find_units


def probe_rank(fit: Fit, full_rank: int, probe_error: float) -> int:
    """The smallest rank whose relative output error is at most ``probe_error``."""
    for k in range(1, full_rank):
        if fit.spec.relative_error(k) <= probe_error:
            return k
    return full_rank - 1


class OutputProbe:
    """The original network's outputs on calibration audio, to measure another's
    E_out: mean squared output difference over the original's output variance."""

    def __init__(self, nnet: Nnet, calibration):
        self.calibration = calibration
        self.base = calibration.run(nnet)
        self.variance = float(np.concatenate(self.base).astype(np.float64).var(0).mean())

    def error(self, other: Nnet) -> float:
        outs = self.calibration.run(other)
        err = np.mean([float(((a.astype(np.float64) - b) ** 2).mean())
                       for a, b in zip(self.base, outs)])
        return float(err) / self.variance


def output_gains(nnet: Nnet, stats: dict, calibration, probe_error: float = 0.2,
                 progress: bool = False) -> dict[str, float]:
    """g_u per unit name, for units with calibration statistics."""
    probe = OutputProbe(nnet, calibration)
    units = [u for u in find_units(nnet) if u.node in stats and u.full_rank > 1]
    if progress:
        from tqdm import tqdm
        units = tqdm(units, desc="sensitivity", unit="layer", file=sys.stderr, leave=False)
    gains = {}
    for u in units:
        work = nnet.copy()
        unit = next(x for x in find_units(work) if x.name == u.name)
        fit = fit_unit(work, unit, stats[u.node])
        k = probe_rank(fit, unit.full_rank, probe_error)
        local = fit.spec.discarded(k) * fit.damage_scale
        if local <= 0:
            continue
        apply_rank(work, unit, fit, k, stats[u.node])
        gains[u.name] = probe.error(work) / local
    return gains
