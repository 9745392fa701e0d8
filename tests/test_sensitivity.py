"""compress.sensitivity: the probe rank, and the local damage it divides by is the
output error that truncation really causes (exact for the layer writing the output)."""
from __future__ import annotations

import numpy as np
import pytest

from kaldi_compress.compress.calibrate import load_calibration, unit_statistics
from kaldi_compress.compress.rewrite import apply_rank, fit_unit
from kaldi_compress.compress.sensitivity import output_gains, probe_rank
from kaldi_compress.compress.units import find_units


@pytest.fixture(scope="module")
def calibration(ko_model_dir, ko_wide_train):
    return load_calibration(ko_model_dir, [ko_wide_train], max_utts=3, progress=False)


def test_probe_rank_is_the_smallest_rank_within_the_error(prepared):
    for unit in find_units(prepared.nnet)[:4]:
        fit = fit_unit(prepared.nnet, unit)
        for p in (0.05, 0.2, 0.5):
            k = probe_rank(fit, unit.full_rank, p)
            ok = [j for j in range(1, unit.full_rank) if fit.spec.relative_error(j) <= p]
            assert k == (ok[0] if ok else unit.full_rank - 1)


def test_local_damage_is_the_output_error_of_the_last_layer(prepared, calibration):
    """For the bottleneck whose consumer writes 'output', the budget's data-aware damage
    (discarded whitened energy / outputs) must equal the measured mean squared output
    error in units of each output's variance, on the calibration frames themselves."""
    nnet = prepared.nnet
    stats = unit_statistics(nnet, calibration)
    out_source = nnet.node("output").descriptor.name
    last = next(u for u in find_units(nnet) if out_source in u.consumers)
    work = nnet.copy()
    unit = next(u for u in find_units(work) if u.name == last.name)
    fit = fit_unit(work, unit, stats[unit.node])
    k = probe_rank(fit, unit.full_rank, 0.2)
    local = fit.spec.discarded(k) * fit.damage_scale
    apply_rank(work, unit, fit, k, stats[unit.node])
    base = np.concatenate(calibration.run(nnet)).astype(np.float64)
    other = np.concatenate(calibration.run(work)).astype(np.float64)
    measured = float((((other - base) ** 2).mean(0) / base.var(0)).mean())
    assert local > 0 and abs(measured - local) <= 1e-3 * local, (measured, local)

    gains = output_gains(nnet, stats, calibration)
    expected = {u.name for u in find_units(nnet) if u.node in stats and u.full_rank > 1}
    assert set(gains) <= expected and last.name in gains
    assert all(np.isfinite(g) and g > 0 for g in gains.values())
