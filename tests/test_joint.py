"""One budget for pruning and SVD (kaldi-compress compress): a single method through the
joint path is that method; widths and ranks together meet the budget with consistent
dimensions; bad options fail in one line; Vosk decodes the result."""
from __future__ import annotations

import json

import pytest

from kaldi_compress.compress.budget import choose
from kaldi_compress.compress.calibrate import load_calibration
from kaldi_compress.compress.joint import JointOptions, joint_compress
from kaldi_compress.compress.prune import (PruneOptions, plan_pruning, probe_width,
                                           prune_compress, space_gains)
from kaldi_compress.compress.prune_order import diagonal_ranking
from kaldi_compress.compress.svd import SvdOptions, svd_compress
from models import reread
from test_prune import fails_in_one_line, run_cli, sum_dims_agree


@pytest.fixture(scope="module")
def calibration(ko_model_dir, ko_wide_train):
    return load_calibration(ko_model_dir, [ko_wide_train], max_utts=3, progress=False)


def test_prune_alone_is_prune_compress(prepared, calibration):
    a, b = reread(prepared), reread(prepared)
    joint_compress(a.nnet, JointOptions(param_ratio=0.85, methods=("prune",),
                                        calibration=calibration))
    prune_compress(b.nnet, PruneOptions(param_ratio=0.85, calibration=calibration))
    assert a.to_bytes() == b.to_bytes()


def test_svd_alone_is_data_aware_svd(prepared, calibration):
    a, b = reread(prepared), reread(prepared)
    stages = joint_compress(a.nnet, JointOptions(param_ratio=0.8, methods=("svd",),
                                                 calibration=calibration))
    svd_compress(b.nnet, SvdOptions(param_ratio=0.8, calibration=calibration))
    assert [s.name for s in stages] == ["ranks"]
    assert a.to_bytes() == b.to_bytes()


def test_probe_width_keeps_the_probe_error():
    ranking = diagonal_ranking([4.0, 1.0, 0.0, 3.0, 2.0])      # total 10
    assert probe_width(ranking, 1, 0.0) == 4            # only the zero-score unit goes
    assert probe_width(ranking, 1, 0.55) == 2      # 0, 1, 2 removed: 3 <= 0.3025 * 10
    assert probe_width(ranking, 4, 1.0) == 4            # never below min_width


def test_joint_budget_met_dims_consistent(prepared, calibration):
    before = prepared.nnet.num_parameters
    work = reread(prepared)
    stages = joint_compress(work.nnet, JointOptions(param_ratio=0.6, calibration=calibration))
    assert [s.name for s in stages] == ["widths", "ranks"]
    after = reread(work)                              # the reader checks every dimension
    assert sum_dims_agree(after.nnet)
    assert 0.95 * 0.6 * before <= after.nnet.num_parameters <= 0.6 * before + 0.5
    ctx = after.nnet.compute_context()
    assert (ctx.left, ctx.right) == (34, 34)


def test_space_gains_are_positive_and_widths_follow_the_budget(prepared, calibration):
    fit_half, probe_half = calibration.halves()
    gains = space_gains(prepared.nnet, plan_pruning(prepared.nnet, "*", fit_half), probe_half,
                        closed_loop=fit_half)
    plan = plan_pruning(prepared.nnet, "*", calibration, refit=False)
    assert set(gains) == {s.name for s in plan.spaces} and min(gains.values()) > 0
    # more budget never narrows a space: the Lagrangian choice is monotone when the
    # damage grows convexly with the units removed (each unit's own score, smallest first)
    table = plan.table(8)
    fixed = prepared.nnet.num_parameters - sum(s.params_before for s in plan.spaces)
    total = prepared.nnet.num_parameters
    widths = [[o.rank for o in choose(table, int(r * total), fixed)] for r in (0.7, 0.8, 0.9)]
    assert all(a <= b for w1, w2 in zip(widths, widths[1:]) for a, b in zip(w1, w2))


@pytest.mark.parametrize("args,msg", [
    (["--param-ratio=0.5", "--methods=svd,lora"], "--methods must list distinct methods"),
    (["--param-ratio=0.5", "--methods=svd,svd"], "--methods must list distinct methods"),
    ([], "give exactly one of --param-ratio, --target-params"),
    (["--param-ratio=1.5"], "--param-ratio must be in (0, 1]"),
    (["--param-ratio=0.5", "--min-width=0"], "--min-width must be positive"),
])
def test_bad_options_fail_in_one_line(args, msg, ko_mdl, ko_model_dir, ko_wide_train, tmp_path):
    fails_in_one_line("compress", args, msg, ko_mdl, ko_model_dir, ko_wide_train, tmp_path)


@pytest.mark.slow
def test_vosk_decodes_a_jointly_compressed_model(ko_mdl, ko_model_dir, ko_wide_train,
                                                 ko_wide_dev, tmp_path):
    from kaldi_compress.evaluate.vosk_decode import decode, list_wavs, model_dir_with_am
    prepared, out, report = tmp_path / "p.mdl", tmp_path / "joint.mdl", tmp_path / "r.json"
    assert run_cli("copy", "--prepare-for-test", ko_mdl, prepared).returncode == 0
    proc = run_cli("compress", "--param-ratio=0.6", f"--calibration-data={ko_wide_train}",
                   f"--model-dir={ko_model_dir}", "--max-utts=3", f"--report={report}",
                   prepared, out)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(report.read_text())
    assert [s["stage"] for s in doc["stages"]] == ["widths", "ranks"]
    assert doc["params_after"] <= 0.6 * doc["params_before"] + 0.5
    wavs = list_wavs(ko_wide_dev)[:4]
    hyps = decode(model_dir_with_am(ko_model_dir, out, tmp_path / "vosk"), wavs, jobs=1).hyps
    assert set(hyps) == {u for u, _ in wavs} and sum(bool(h) for h in hyps.values()) >= 3
