"""Data-aware TT cores: Kronecker factors of a second moment, whitened TT-SVD, and on
calibration audio an output error no larger than the weights-only cores'."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kaldi_compress import cli
from kaldi_compress.cli import tt as tt_cli
from kaldi_compress.compress.calibrate import Moments, Recorder, load_calibration
from kaldi_compress.compress.tt import TTShape, tt_svd
from kaldi_compress.compress.tt_compress import TtOptions, tt_compress
from kaldi_compress.compress.tt_data import (fit_layer, kronecker_factors, output_error,
                                             whitened_tt)
from kaldi_compress.compress.units import weight


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1, "blas"):
        yield


def spd(n: int, rng, spread: float = 3.0) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (q * np.exp(spread * rng.standard_normal(n))) @ q.T


@pytest.mark.parametrize("modes", [(4, 6), (2, 3, 4)])
def test_kronecker_factors_of_a_kronecker_product_are_exact(modes):
    rng = np.random.default_rng(0)
    parts = [spd(n, rng, 1.0) for n in modes]
    c = parts[0]
    for p in parts[1:]:
        c = np.kron(c, p)
    f = kronecker_factors(c, modes)
    got = f[0]
    for p in f[1:]:
        got = np.kron(got, p)
    np.testing.assert_allclose(got, c, rtol=1e-9, atol=1e-9 * np.abs(c).max())
    assert all(np.linalg.eigvalsh(x).min() > 0 for x in f)


@pytest.mark.parametrize("shape", [TTShape((24, 32), (8, 8)), TTShape((8, 8, 12), (4, 4, 4))],
                         ids=str)
def test_whitened_tt_is_best_for_kronecker_inputs(shape):
    """With C exactly a Kronecker product, the whitened TT-SVD is TT-SVD in the output
    metric: less output error than TT-SVD of W at the same ranks, and still a TT of them."""
    rng = np.random.default_rng(1)
    parts = [spd(n, rng) for n in shape.in_modes]
    c = parts[0]
    for p in parts[1:]:
        c = np.kron(c, p)
    w = rng.standard_normal((shape.rows, shape.cols))
    plain = tt_svd(w, shape, 6)
    data = whitened_tt(w, shape, plain.ranks, kronecker_factors(c, shape.in_modes))
    assert data.ranks == plain.ranks and data.shape == shape
    assert output_error(w, data.to_matrix(), c) < 0.9 * output_error(w, plain.to_matrix(), c)


def test_fit_layer_never_worse_and_bias_absorbs_the_mean():
    rng = np.random.default_rng(2)
    shape = TTShape((8, 6), (4, 5))
    x = rng.standard_normal((4000, 20)) @ rng.standard_normal((20, 20)) + 3.0
    mom = Moments(x.T @ x / len(x), x.mean(0))
    w, b = rng.standard_normal((48, 20)), rng.standard_normal(48)
    plain = tt_svd(w, shape, 3)
    fit = fit_layer(w, b, plain, 48, mom)
    assert fit.error <= fit.weights_only_error
    t = fit.tt.to_matrix()
    y, y_tt = x @ w.T + b, x @ t.T + fit.bias
    np.testing.assert_allclose((y - y_tt).mean(0), 0, atol=1e-8)   # the mean is exact
    cov = mom.covariance()
    assert fit.error == pytest.approx(np.sqrt(output_error(w, t, cov) / output_error(w, 0 * w, cov)))


# --- on calibration audio ------------------------------------------------------------------

LAYERS = "tdnn[1f][.234]*"


@pytest.fixture(scope="module")
def calibration(ko_model_dir, ko_wide_train):
    return load_calibration(ko_model_dir, [ko_wide_train], max_utts=6, progress=False)


def layer_output_errors(original, compressed, calibration, node_names):
    """Per node, sum ||W x + b - (T x + b')||^2 over the calibration frames, with x the
    node's input in the original network (recorded), W, b the original layer and T, b'
    the dense matrix and bias of its TT (read back from the written chain)."""
    from kaldi_compress.compress.tt_chain import find_chains
    from kaldi_compress.compress.tt import tt_to_matrix
    from kaldi_compress.compress.units import bias, offsets
    wanted = {n: (n, "taps" if len(offsets(original.components[n])) > 1 else "input")
              for n in node_names}
    rec = Recorder(wanted)
    calibration.run(original, rec)
    chains = {c.nodes[0].rsplit(".tt", 1)[0]: c for c in find_chains(compressed)}
    out = {}
    for n in node_names:
        comp = original.components[n]
        w, b = weight(comp).astype(np.float64), bias(comp).astype(np.float64)
        ch = chains[n]
        t = tt_to_matrix([g.astype(np.float64) for g in ch.cores(compressed)])[:len(w)]
        b_tt = compressed.components[n + ".tt-bias"]["<Offsets>"].astype(np.float64) \
            if len(b) else np.zeros(len(w))
        x = torch.cat(rec.rows[n]).double().numpy()
        e = x @ (w - t).T + ((b if len(b) else 0) - b_tt)
        out[n] = float((e ** 2).sum())
    return out


def test_data_aware_cores_fit_the_calibration_outputs_better(prepared, calibration):
    original = prepared.nnet.copy()
    plain_net, data_net = prepared.nnet.copy(), prepared.nnet.copy()
    opts = dict(components=LAYERS, param_ratio=0.97, allow_svd=False)
    plain = tt_compress(plain_net, TtOptions(**opts))
    data = tt_compress(data_net, TtOptions(**opts, calibration=calibration))
    tt_rows = [r.name for r in plain if r.method == "tt"]
    assert tt_rows and tt_rows == [r.name for r in data if r.method == "tt"]
    assert plain_net.num_parameters == data_net.num_parameters       # same shapes and ranks
    for r in data:
        if r.method == "tt":
            assert r.output_error is not None and "calibration output error" in r.note \
                or "TT-SVD of W kept" in r.note
    errs_plain = layer_output_errors(original, plain_net, calibration, tt_rows)
    errs_data = layer_output_errors(original, data_net, calibration, tt_rows)
    for n in tt_rows:
        assert errs_data[n] <= errs_plain[n] * (1 + 1e-6), n
    # tdnn1.affine reads LDA-transformed features: strongly anisotropic, whitening pays
    assert errs_data["tdnn1.affine"] < 0.5 * errs_plain["tdnn1.affine"]


# --- the command line ----------------------------------------------------------------------

def run_cli(monkeypatch, argv):
    monkeypatch.setitem(cli.COMMANDS, "tt", tt_cli)
    return cli.main(["tt", *argv])


@pytest.mark.parametrize("extra,message", [
    (["--calibration-data={empty}"], "--calibration-data needs --model-dir"),
    (["--calibration-data={empty}", "--model-dir={model_dir}"], "no .wav files for calibration"),
    (["--calibration-data={empty}", "--model-dir={model_dir}", "--shrinkage=-1"],
     "--shrinkage must be >= 0"),
])
def test_calibration_errors_are_one_line(monkeypatch, capsys, ko_mdl, ko_model_dir, tmp_path,
                                         extra, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out.mdl"
    args = [a.format(empty=empty, model_dir=ko_model_dir) for a in extra]
    argv = ["--tt-rank=8", "--components=tdnnf4.affine", *args, str(ko_mdl), str(out)]
    assert run_cli(monkeypatch, argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kaldi-compress: error: ")
    assert message in err
    assert not out.exists()
