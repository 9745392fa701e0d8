"""Structured width pruning: nothing pruned is exact, no-refit pruning is the removed
units replaced by their means, the greedy order's damage is the exact least-squares
residual, the closed loop starts where the open loop does and ends closer to the
original, dimensions stay consistent, Vosk decodes the result."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from kaldi_compress.compress.calibrate import load_calibration
from kaldi_compress.compress.prune import (PruneOptions, consumer_statistics, prune_compress,
                                           select_spaces)
from kaldi_compress.compress.lowrank import RIDGE
from kaldi_compress.compress.prune_order import diagonal_ranking, diagonal_scores, refit_ranking
from kaldi_compress.compress.units import weight
from kaldi_compress.compress.widths import find_spaces
from kaldi_compress.compute.fidelity import compare_outputs
from kaldi_compress.nnet3.components import NaturalGradientAffineComponent
from kaldi_compress.nnet3.descriptors import Sum
from models import reread


@pytest.fixture(scope="module")
def calibration(ko_model_dir, ko_wide_train):
    return load_calibration(ko_model_dir, [ko_wide_train], max_utts=3, progress=False)


def sum_dims_agree(nnet) -> bool:
    dims = nnet.node_dims()

    def walk(d):
        if isinstance(d, Sum) and len({s.dim(dims.get) for s in d.srcs}) != 1:
            return False
        return all(walk(c) for c in d.children())
    return all(walk(n.descriptor) for n in nnet.nodes if n.descriptor is not None)


def test_residual_stream_is_one_space(prepared):
    spaces = {s.name: s for s in find_spaces(prepared.nnet)}
    stream = spaces["tdnn1.affine"]
    assert stream.dim == 768 and len(stream.producers) == 15       # tdnn1 + tdnnf2..15
    assert {c.node for c in stream.consumers} == \
        {f"tdnnf{i}.linear" for i in range(2, 16)} | {"prefinal-l"}
    assert all(c.starts == (0, 768) for c in stream.consumers if c.node != "tdnnf5.linear"
               and c.node != "prefinal-l")
    chosen = [s.name for s in select_spaces(prepared.nnet, "*")]
    assert chosen == ["tdnn1.affine", "prefinal-chain.affine"]     # bottlenecks are SVD's


def test_pruning_nothing_is_exact(prepared, ko_bytes, calibration):
    reports = prune_compress(prepared.nnet, PruneOptions(param_ratio=1.0,
                                                         calibration=calibration))
    assert {r.method for r in reports} == {"kept"}
    before = reread(prepared)
    assert prepared.to_bytes() == before.to_bytes()


def test_no_refit_is_the_removed_units_replaced_by_their_means(prepared, calibration):
    """prefinal-chain: affine -> relu -> batchnorm1 -> (bias-free) linear.  Without
    refitting, pruning must equal the original network whose linear reads the removed
    units as their calibration means: columns zeroed, W_R mu_R as a bias."""
    nnet = prepared.nnet
    space, = select_spaces(nnet, "prefinal-chain.*")
    stats = consumer_statistics(nnet, [space], calibration)
    keep = diagonal_ranking(diagonal_scores(nnet, space, stats)).kept(600)
    removed = np.setdiff1d(np.arange(768), keep)
    reference = nnet.copy()
    lin = reference.components["prefinal-chain.linear"]
    w = lin.linear_params.astype(np.float64)
    mu = stats["prefinal-chain.linear"].mean
    shifted = w[:, removed] @ mu[removed]
    w[:, removed] = 0.0
    reference.components["prefinal-chain.linear"] = NaturalGradientAffineComponent.create(
        w.astype(np.float32), shifted.astype(np.float32), lin.updatable_config())
    pruned = reread(prepared)
    prune_compress(pruned.nnet, PruneOptions("prefinal-chain.*", keep_fraction=600 / 768,
                                             calibration=calibration, refit=False))
    assert pruned.nnet.components["prefinal-chain.batchnorm1"]["<Dim>"] == 600
    got, want = calibration.run(pruned.nnet), calibration.run(reference)
    assert compare_outputs(want, got).snr_db > 60


def test_budget_met_dims_consistent_and_refit_helps(prepared, calibration):
    base = calibration.run(prepared.nnet)
    results = {}
    for refit in (False, True):
        work = reread(prepared)
        prune_compress(work.nnet, PruneOptions(param_ratio=0.85, calibration=calibration,
                                               refit=refit))
        assert work.nnet.num_parameters <= 0.85 * prepared.nnet.num_parameters + 0.5
        again = reread(work)                           # Kaldi's reader checks every dim
        assert sum_dims_agree(again.nnet)
        results[refit] = compare_outputs(base, calibration.run(again.nnet))
    assert results[True].snr_db > results[False].snr_db


def refit_damage(w, d, cov, cols_removed):
    """tr(D W_R S_R W_R^T D) / out: least-squares refit of y = W z on the kept columns,
    S_R = C_RR - C_RK C_KK^{-1} C_KR (with the refit's ridge)."""
    n = len(cov)
    cov = cov + RIDGE * np.trace(cov) / n * np.eye(n)
    kept = np.setdiff1d(np.arange(n), cols_removed)
    r = cols_removed
    schur = cov[np.ix_(r, r)] - cov[np.ix_(r, kept)] @ np.linalg.solve(
        cov[np.ix_(kept, kept)], cov[np.ix_(kept, r)])
    wd = w[:, r] * d[:, None]
    return float(np.trace(wd @ schur @ wd.T)) / w.shape[0]


def test_greedy_damage_is_the_exact_refit_residual(prepared, calibration):
    """The Optimal Brain Surgeon updates track the refit exactly: after r removals the
    ranking's damage equals the least-squares residual computed from scratch."""
    nnet = prepared.nnet
    space, = select_spaces(nnet, "prefinal-chain.*")
    stats = consumer_statistics(nnet, [space], calibration)
    ranking = refit_ranking(nnet, space, stats, floor=728)
    assert ranking.lost[40] < np.inf and ranking.lost[41] == np.inf
    st = stats["prefinal-chain.linear"]
    w = weight(nnet.components["prefinal-chain.linear"]).astype(np.float64)
    for r in (1, 10, 40):
        want = refit_damage(w, st.inverse_std, st.covariance, np.sort(ranking.order[:r]))
        assert ranking.lost[r] == pytest.approx(want, rel=1e-6)
    # the first step takes the cheapest unit: alone, j costs ||D w_j||^2 / (C^{-1})_jj
    cov = st.covariance + RIDGE * np.trace(st.covariance) / 768 * np.eye(768)
    alone = ((w * st.inverse_std[:, None]) ** 2).sum(0) / np.diag(np.linalg.inv(cov)) / 64
    assert ranking.order[0] == np.argmin(alone)
    assert ranking.lost[1] == pytest.approx(alone.min(), rel=1e-6)


def test_closed_loop_starts_as_the_open_loop_and_ends_closer(prepared, calibration):
    """The first reader of the residual stream sees the same (only cut) inputs in both
    loops, so its refit is the same; the network's outputs end closer to the original."""
    base = calibration.run(prepared.nnet)
    nets = {}
    for closed in (False, True):
        work = reread(prepared)
        prune_compress(work.nnet, PruneOptions(keep_fraction=0.7,
                                               calibration=calibration, closed_loop=closed))
        nets[closed] = work.nnet
    first = [weight(nets[c].components["tdnnf2.linear"]) for c in (False, True)]
    assert np.abs(first[0] - first[1]).max() <= 1e-5 * np.abs(first[0]).max()
    later = [weight(nets[c].components["tdnnf9.linear"]) for c in (False, True)]
    assert np.abs(later[0] - later[1]).max() > 1e-3 * np.abs(later[0]).max()
    snr = {c: compare_outputs(base, calibration.run(n)).snr_db for c, n in nets.items()}
    assert snr[True] > snr[False]


@pytest.mark.parametrize("closed", [False, True])
def test_large_shrinkage_pulls_the_refit_to_the_plain_cut(prepared, calibration, closed):
    """--shrinkage makes every refit a ridge towards the original map: far out, the
    consumer keeps exactly the original columns of the units that stay."""
    work = reread(prepared)
    cal = dataclasses.replace(calibration, shrinkage=1e8)
    prune_compress(work.nnet, PruneOptions("prefinal-chain.*", keep_fraction=600 / 768,
                                           calibration=cal, closed_loop=closed))
    rows = weight(prepared.nnet.components["prefinal-chain.affine"])
    kept_rows = weight(work.nnet.components["prefinal-chain.affine"])
    kept = [int(np.nonzero((rows == r).all(1))[0][0]) for r in kept_rows]
    assert len(set(kept)) == 600
    w = weight(prepared.nnet.components["prefinal-chain.linear"])[:, kept]
    got = weight(work.nnet.components["prefinal-chain.linear"])
    assert np.abs(got - w).max() <= 1e-4 * np.abs(w).max()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "kaldi_compress", *map(str, args)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("args,msg", [
    (["--keep-fraction=0.5", "--param-ratio=0.5"], "exactly one of"),
    (["--keep-fraction=0"], "--keep-fraction must be in (0, 1]"),
    (["--param-ratio=0.8", "--components=nothing*"], "matches no component"),
])
def test_bad_options_fail_in_one_line(args, msg, ko_mdl, ko_model_dir, ko_wide_train, tmp_path):
    fails_in_one_line("prune", args, msg, ko_mdl, ko_model_dir, ko_wide_train, tmp_path)


def fails_in_one_line(command, args, msg, ko_mdl, ko_model_dir, ko_wide_train, tmp_path):
    """``command`` with calibration options and ``args`` exits 1 with one line holding
    ``msg`` and writes nothing."""
    out = tmp_path / "o.mdl"
    proc = run_cli(command, *args, f"--calibration-data={ko_wide_train}",
                   f"--model-dir={ko_model_dir}", "--max-utts=1", ko_mdl, out)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and msg in proc.stderr
    assert not out.exists()


def test_vosk_decodes_a_pruned_model(ko_mdl, ko_model_dir, ko_wide_train, ko_wide_dev,
                                     tmp_path):
    from kaldi_compress.evaluate.vosk_decode import decode, list_wavs, model_dir_with_am
    prepared, out = tmp_path / "p.mdl", tmp_path / "pruned.mdl"
    assert run_cli("copy", "--prepare-for-test", ko_mdl, prepared).returncode == 0
    proc = run_cli("prune", "--param-ratio=0.8", f"--calibration-data={ko_wide_train}",
                   f"--model-dir={ko_model_dir}", "--max-utts=3", prepared, out)
    assert proc.returncode == 0, proc.stderr
    assert "prune" in proc.stderr and "768->" in proc.stderr
    wavs = list_wavs(ko_wide_dev)[:4]
    hyps = decode(model_dir_with_am(ko_model_dir, out, tmp_path / "vosk"), wavs, jobs=1).hyps
    assert set(hyps) == {u for u, _ in wavs} and sum(bool(h) for h in hyps.values()) >= 3
