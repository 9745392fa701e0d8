"""SVD compression: Kaldi's apply-svd reproduced, errors as SVD theory says, budgets met."""
import subprocess
import sys

import numpy as np
import pytest

from kaldi_compress import read_model
from kaldi_compress.cli.info import format_info, model_info
from kaldi_compress.compress.kaldi_svd import apply_svd_kaldi
from kaldi_compress.compress.rewrite import apply_rank, fit_unit
from kaldi_compress.compress.units import UnitKind, batchnorm_scale_offset, find_units, single_unit
from kaldi_compress.compress.svd import SvdOptions, svd_compress
from kaldi_compress.nnet3 import parse_model
from kaldi_compress.nnet3.edit import prepare_for_test
from models import reread


@pytest.mark.parametrize("tag,kwargs", [
    ("a", dict(bottleneck_dim=32, shrinkage_threshold=0.99)),
    ("b", dict(energy_threshold=0.9, shrinkage_threshold=0.8)),
])
def test_kaldi_compatible_matches_kaldi_apply_svd(ko_bytes, golden, tag, kwargs):
    model = parse_model(bytearray(ko_bytes), "final.mdl")
    apply_svd_kaldi(model.nnet, "*", **kwargs)
    model = reread(model)
    kaldi = (golden / "ko_svd" / f"svd_{tag}_info.txt").read_text().splitlines()
    kaldi_nodes = [line for line in kaldi if not line.startswith("component name=")]
    assert format_info(model_info(model)).splitlines()[:len(kaldi_nodes)] == kaldi_nodes
    kaldi_components = [line.split(",")[0] for line in kaldi if line.startswith("component name=")]
    assert [f"component name={n} type={c.type}" for n, c in model.nnet.components.items()] \
        == kaldi_components
    # each _a/_b pair carries the learning settings of the layer it replaced
    for line in kaldi:
        if line.startswith("component name=") and ("_a type=" in line or "_b type=" in line):
            name = line.split()[1][len("name="):]
            comp = model.nnet.components[name]
            fields = dict(kv.split("=", 1) for kv in line.split(", ")[1:5] if "=" in kv)
            assert np.isclose(float(fields["learning-rate"]), comp.learning_rate)
            assert np.isclose(float(fields["l2-regularize"]), comp["<L2Regularize>"])


def test_kaldi_compatible_energy_rule_carries_rank_over(ko_bytes):
    """Kaldi's quirk: the rank chosen for one layer is the next layer's dimension check."""
    model = parse_model(bytearray(ko_bytes), "final.mdl")
    records = apply_svd_kaldi(model.nnet, "*", energy_threshold=0.9, shrinkage_threshold=0.8)
    ranks = {r.component: r for r in records if isinstance(r.rank, int)}
    assert list(ranks) == ["tdnn1.affine"] and ranks["tdnn1.affine"].rank == 122
    skipped = {r.component: r.note for r in records if r.rank is None}
    assert "dimension 64 -> 768 vs rank 122" in skipped["prefinal-chain.affine"]


def effective_error(before, after, unit, k):
    """||M - M_k|| / ||M|| measured on the written model's parameters."""
    b, a = before.nnet.components, after.nnet.components
    if unit.kind is not UnitKind.BOTTLENECK:
        w = b[unit.name].linear_params.astype(np.float64)
        first, second = a[unit.name + "_a"], a[unit.name + "_b"]
        assert first.linear_params.shape[0] == k
        approx = second.linear_params.astype(np.float64) @ first.linear_params.astype(np.float64)
        return np.linalg.norm(w - approx) / np.linalg.norm(w)
    old_l = b[unit.name].linear_params.astype(np.float64)
    new_l = a[unit.name].linear_params.astype(np.float64)
    assert new_l.shape[0] == k
    p = new_l @ np.linalg.pinv(old_l)          # new h = P (old h)
    assert np.allclose(p @ p.T, np.eye(k), atol=1e-4)   # orthonormal rows: semi-orthogonality kept
    mid = old_l.shape[0]
    scale = 1.0
    if unit.batchnorm:
        scale = batchnorm_scale_offset(b[before.nnet.node(unit.batchnorm).component])[0]
    rows_old, rows_new = [], []
    for node in unit.consumers:
        name = before.nnet.node(node).component
        old_f, new_f = b[name].linear_params.astype(np.float64), a[name].linear_params.astype(np.float64)
        for j in range(old_f.shape[1] // mid):
            rows_old.append(old_f[:, j * mid:(j + 1) * mid] * scale)
            rows_new.append(new_f[:, j * k:(j + 1) * k] @ p)
    s_old, s_new = np.vstack(rows_old), np.vstack(rows_new)
    return np.linalg.norm(s_old - s_new) / np.linalg.norm(s_old)


def test_relative_error_equals_svd_theory(prepared):
    units = {u.name: u for u in find_units(prepared.nnet)}
    targets = {"tdnn1.affine": 100, "tdnnf2.linear": 40, "tdnnf5.linear": 20,
               "tdnnf9.linear": 52, "prefinal-l": 30, "prefinal-chain.linear": 48}
    assert {units[n].kind for n in targets} == {UnitKind.AFFINE, UnitKind.BOTTLENECK}
    assert units["prefinal-chain.linear"].batchnorm == "prefinal-chain.batchnorm2"
    work = reread(prepared)
    for name, k in targets.items():
        unit = [u for u in find_units(work.nnet) if u.name == name][0]
        fit = fit_unit(work.nnet, unit)
        theory = np.sqrt(fit.spec.energy[k:].sum() / fit.spec.energy.sum())
        apply_rank(work.nnet, unit, fit, k)
        measured = effective_error(prepared, reread(work), unit, k)
        assert abs(measured - theory) < 1e-5 * max(theory, 1.0), (name, measured, theory)


def test_multi_offset_tdnn_split(golden):
    model = read_model(str(golden / "nnets" / "m1_tdnnf.raw"))
    prepare_for_test(model.nnet)
    nnet = model.nnet
    unit = single_unit(nnet, "tdnnf2.linear")   # 48 x 2 offsets -> 16, no bias
    assert (unit.kind, unit.full_rank, unit.params_at(6)) == (UnitKind.TDNN, 16, 6 * (96 + 16))
    w = nnet.components["tdnnf2.linear"].linear_params.astype(np.float64)
    apply_rank(nnet, unit, fit_unit(nnet, unit), 6)
    after = reread(model)
    a, b = after.nnet.components["tdnnf2.linear_a"], after.nnet.components["tdnnf2.linear_b"]
    assert a.type == "TdnnComponent" and a.time_offsets == [-1, 0] and a.bias_params.size == 0
    assert b.type == "TdnnComponent" and b.time_offsets == [0] and a.linear_params.shape == (6, 96)
    approx = b.linear_params.astype(np.float64) @ a.linear_params.astype(np.float64)
    s = np.linalg.svd(w, compute_uv=False)
    assert np.isclose(np.linalg.norm(w - approx), np.sqrt((s[6:] ** 2).sum()), rtol=1e-5)
    ctx = after.nnet.compute_context()
    assert (ctx.left, ctx.right) == (2, 2)


@pytest.mark.parametrize("ratio", [0.9, 0.75, 0.5, 0.3])
def test_budget_is_met(prepared, ratio):
    before = prepared.nnet.num_parameters
    reports = svd_compress(prepared.nnet, SvdOptions(param_ratio=ratio))
    after = reread(prepared).nnet.num_parameters
    assert after <= ratio * before + 0.5
    assert after >= ratio * before - 3384  # within one unit of the coarsest layer's rank step
    assert sum(r.params_after for r in reports) - sum(r.params_before for r in reports) \
        == after - before
    ctx = reread(prepared).nnet.compute_context()
    assert (ctx.left, ctx.right) == (34, 34)


def test_energy_rule_per_layer(prepared):
    reports = svd_compress(prepared.nnet, SvdOptions(energy_threshold=0.95))
    for r in reports:
        if r.method != "kept":
            assert r.weight_error <= np.sqrt(0.05) + 1e-9


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "kaldi_compress", *map(str, args)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("args,msg", [
    (["--components=nothing*", "--bottleneck-dim=8"], "matches no component"),
    (["--components=*relu", "--bottleneck-dim=8"], "none that can be factorized"),
    (["--bottleneck-dim=8", "--param-ratio=0.5"], "exactly one of"),
    ([], "exactly one of"),
    (["--param-ratio=1.5"], "--param-ratio must be in (0, 1]"),
    (["--energy-threshold=1.2"], "--energy-threshold must be in (0, 1)"),
    (["--bottleneck-dim=abc"], "invalid int value"),
    (["--kaldi-compatible", "--param-ratio=0.5"], "--kaldi-compatible takes only"),
    (["--param-ratio=0.01"], "cannot reach"),
])
def test_svd_cli_errors(ko_mdl, tmp_path, args, msg):
    out = tmp_path / "out.mdl"
    proc = run_cli("svd", *args, ko_mdl, out)
    assert proc.returncode != 0 and msg in proc.stderr
    assert not out.exists()


def test_svd_cli_writes_model_and_report(ko_mdl, tmp_path):
    prepared, out, report = tmp_path / "p.mdl", tmp_path / "s.mdl", tmp_path / "r.json"
    assert run_cli("copy", "--prepare-for-test", ko_mdl, prepared).returncode == 0
    proc = run_cli("svd", "--param-ratio=0.6", f"--report={report}", prepared, out)
    assert proc.returncode == 0, proc.stderr
    assert "tdnnf2.linear" in proc.stderr and "bottleneck" in proc.stderr
    import json
    doc = json.loads(report.read_text())
    assert doc["params_after"] == read_model(str(out)).nnet.num_parameters
    assert doc["params_after"] <= 0.6 * doc["params_before"] + 0.5


def test_data_aware_beats_weights_only_on_calibration_audio(prepared, ko_model_dir,
                                                           ko_wide_train):
    """Same ranks; data-aware (whitened, closed-loop) truncation keeps the outputs closer."""
    from kaldi_compress.compress.calibrate import load_calibration
    from kaldi_compress.compute.fidelity import compare_outputs
    cal = load_calibration(ko_model_dir, [ko_wide_train], max_utts=4)
    base = cal.run(prepared.nnet)
    results = {}
    for name, calibration in (("weights", None), ("data", cal)):
        work = reread(prepared)
        reports = svd_compress(work.nnet, SvdOptions(components="tdnnf*", bottleneck_dim=40,
                                                     calibration=calibration))
        assert all(r.rank_after == 40 for r in reports)
        assert (reports[0].output_error is None) == (calibration is None)
        results[name] = compare_outputs(base, cal.run(work.nnet))
    assert results["data"].snr_db > results["weights"].snr_db + 1.0
    assert results["data"].agreement > results["weights"].agreement


def test_data_aware_cli_meets_budget(ko_mdl, ko_model_dir, ko_wide_train, tmp_path):
    prepared, out = tmp_path / "p.mdl", tmp_path / "s.mdl"
    assert run_cli("copy", "--prepare-for-test", ko_mdl, prepared).returncode == 0
    proc = run_cli("svd", "--param-ratio=0.8", f"--calibration-data={ko_wide_train}",
                   f"--model-dir={ko_model_dir}", "--max-utts=3", prepared, out)
    assert proc.returncode == 0, proc.stderr
    model = read_model(str(out))
    assert model.nnet.num_parameters <= 0.8 * read_model(str(prepared)).nnet.num_parameters + 0.5
    assert "rel.err(out)" in proc.stderr
    proc = run_cli("svd", "--param-ratio=0.8", f"--calibration-data={ko_wide_train}", prepared,
                   out)
    assert proc.returncode == 1 and "needs --model-dir" in proc.stderr


def test_data_aware_leaves_a_branch_output_does_not_use(ko_mdl, ko_model_dir, ko_wide_train,
                                                        tmp_path):
    """Not prepared for test: the xent branch gets no calibration statistics, so it is
    left byte for byte as it was (with a warning), and the budget is still met."""
    out = tmp_path / "s.mdl"
    proc = run_cli("svd", "--param-ratio=0.8", f"--calibration-data={ko_wide_train}",
                   f"--model-dir={ko_model_dir}", "--max-utts=2", ko_mdl, out)
    assert proc.returncode == 0, proc.stderr
    assert "prefinal-xent.linear" in proc.stderr and "warning" in proc.stderr
    before, after = read_model(str(ko_mdl)).nnet, read_model(str(out)).nnet
    assert after.num_parameters <= 0.8 * before.num_parameters + 0.5
    for name in ("prefinal-xent.linear", "prefinal-xent.affine", "prefinal-l"):
        assert after.components[name].linear_params.tobytes() == \
            before.components[name].linear_params.tobytes()


def test_closed_loop_statistics_of_an_unchanged_network_are_the_open_loop_ones(
        prepared, ko_model_dir, ko_wide_train):
    """Nothing compressed yet: x = x_o on every frame, so Cov(x_o, x) = Cov(x), E[x_o] = E[x],
    and the paired run (original and copy side by side, 8 utterances at a time) sees the
    same moments as the plain one, for a layer's input and a bottleneck's taps."""
    from kaldi_compress.compress.calibrate import (closed_loop_stats, load_calibration,
                                                   unit_statistics)
    cal = load_calibration(ko_model_dir, [ko_wide_train], max_utts=9)
    stats = unit_statistics(prepared.nnet, cal)
    units = {u.name: u for u in find_units(prepared.nnet)}
    work, taps_seen = reread(prepared), 0
    for name in ("tdnn1.affine", "tdnnf6.linear", "prefinal-chain.linear"):
        u = units[name]
        open_loop = stats[u.node]
        closed = closed_loop_stats(work.nnet, prepared.nnet, cal, u, open_loop)
        np.testing.assert_allclose(closed.moment, open_loop.moment, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(closed.cross, open_loop.covariance(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(closed.target_mean, closed.mean, rtol=1e-6, atol=1e-8)
        for c, taps in closed.taps.items():
            taps_seen += 1
            np.testing.assert_allclose(taps.cross, taps.covariance(), rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(taps.moment, open_loop.taps[c].moment, rtol=1e-5,
                                       atol=1e-7)
    assert taps_seen >= 1
