"""Fisher row weights (compress.fisher): the estimate and the fits that use it."""
import subprocess
import sys

import numpy as np
import pytest

from kaldi_compress import read_model
from kaldi_compress.compress.rewrite import fit_unit
from kaldi_compress.compress.units import find_units


def test_fisher_of_the_output_is_the_softmax_variance(prepared, ko_model_dir, ko_wide_train):
    """At the output z itself g = onehot(s) - p, so E_s[g_i^2] = p_i (1 - p_i) and
    sum_i F_ii = mean over frames of 1 - sum_i p_i^2: the sampled estimate agrees with
    the exact value within its Monte-Carlo spread."""
    from kaldi_compress.compress.calibrate import load_calibration
    from kaldi_compress.compress.fisher import fisher_diagonal
    cal = load_calibration(ko_model_dir, [ko_wide_train], max_utts=6)
    fisher = fisher_diagonal(prepared.nnet, cal, {"output.affine", "prefinal-l"})
    assert set(fisher) == {"output.affine", "prefinal-l"}
    z = np.concatenate(cal.run(prepared.nnet)).astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    exact = (p * (1 - p)).mean(0)
    f = fisher["output.affine"]
    assert f.shape == (2616,) and np.all(f >= 0)
    # per frame, sum_i g_i^2 = 1 - 2 p_s + |p|^2 lies in [0, 2]: the mean of n draws is
    # within 4 sqrt(1 / n) of its expectation with overwhelming probability
    n = len(z)
    assert abs(f.sum() - exact.sum()) < 4 / np.sqrt(n)
    assert fisher["prefinal-l"].shape == (64,) and np.all(fisher["prefinal-l"] > 0)
    # the same seed gives the same estimate, another seed another one
    again = fisher_diagonal(prepared.nnet, cal, {"output.affine"})
    np.testing.assert_array_equal(again["output.affine"], f)
    other = fisher_diagonal(prepared.nnet, cal, {"output.affine"}, seed=1)
    assert not np.array_equal(other["output.affine"], f)


def test_fisher_weighted_fit_minimises_the_fisher_weighted_error(prepared, ko_model_dir,
                                                                ko_wide_train):
    """Eckart-Young with row weights: at the same rank, the fit made with Fisher row weights
    D_F has the smaller output error tr(D_F^2 dW C dW^T) (C: the input covariance), and
    the one made with 1/std weights the smaller tr(D_s^2 dW C dW^T): each is the exact
    optimum of its own weighted error."""
    from kaldi_compress.compress.calibrate import load_calibration, unit_statistics
    cal_std = load_calibration(ko_model_dir, [ko_wide_train], max_utts=6)
    cal_f = load_calibration(ko_model_dir, [ko_wide_train], max_utts=6, row_weights="fisher")
    stats = {"std": unit_statistics(prepared.nnet, cal_std),
             "fisher": unit_statistics(prepared.nnet, cal_f)}
    unit = next(u for u in find_units(prepared.nnet) if u.name == "tdnn1.affine")
    st = stats["std"][unit.node]
    np.testing.assert_array_equal(st.moment, stats["fisher"][unit.node].moment)
    weights = {k: s[unit.node].row_weight for k, s in stats.items()}
    assert weights["fisher"].shape == weights["std"].shape
    assert not np.allclose(weights["fisher"] / weights["fisher"].mean(),
                           weights["std"] / weights["std"].mean(), rtol=0.1)
    c, k = st.covariance(), 40
    errors = {}
    for name, s in stats.items():
        fit = fit_unit(prepared.nnet, unit, s[unit.node])
        a, b = fit.spec.factors(k)
        dw = fit.target - b @ a
        errors[name] = {w: float(np.trace((weights[w][:, None] ** 2 * dw) @ c @ dw.T))
                        for w in weights}
    assert errors["fisher"]["fisher"] < errors["std"]["fisher"] * 0.99
    assert errors["std"]["std"] < errors["fisher"]["std"] * 0.99


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "kaldi_compress", *map(str, args)],
                          capture_output=True, text=True)


def test_row_weights_cli(ko_mdl, ko_model_dir, ko_wide_train, tmp_path):
    out = tmp_path / "s.mdl"
    proc = run_cli("svd", "--param-ratio=0.8", "--row-weights=fisher",
                   f"--calibration-data={ko_wide_train}", f"--model-dir={ko_model_dir}",
                   "--max-utts=3", ko_mdl, out)
    assert proc.returncode == 0, proc.stderr
    assert read_model(str(out)).nnet.num_parameters <= \
        0.8 * read_model(str(ko_mdl)).nnet.num_parameters + 0.5
    bad = tmp_path / "bad.mdl"
    proc = run_cli("compress", "--param-ratio=0.8", "--row-weights=entropy",
                   f"--calibration-data={ko_wide_train}", f"--model-dir={ko_model_dir}",
                   ko_mdl, bad)
    assert proc.returncode != 0 and "--row-weights" in proc.stderr and not bad.exists()
