"""Fidelity metrics: a network against itself and against perturbed copies."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kaldi_compress import cli
from kaldi_compress.cli import fidelity as fidelity_cmd
from kaldi_compress.compute.fidelity import (compare_networks, compare_outputs, fidelity,
                                             fidelity_tables)
from kaldi_compress.errors import KaldiCompressError
from kaldi_compress.frontend.model_dir import ModelDirFrontEnd
from kaldi_compress.nnet3 import read_model, write_model
from arks import write_ark_scp


def test_identical_outputs():
    rng = np.random.default_rng(0)
    outs = [rng.normal(size=(n, 7)).astype(np.float32) for n in (5, 9)]
    f = compare_outputs(outs, [o.copy() for o in outs])
    assert (f.utterances, f.frames) == (2, 14)
    assert f.snr_db == math.inf and f.agreement == 100.0 and f.kl == 0.0


def test_metrics_follow_their_definitions():
    base = [np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]], dtype=np.float32)]
    other = [np.array([[0.0, 1.0, 0.1], [0.0, 2.0, 0.0]], dtype=np.float32)]
    f = compare_outputs(base, other)
    assert f.snr_db == pytest.approx(10 * math.log10(5.0 / 8.01))
    assert f.agreement == 50.0
    p = np.exp(base[0]) / np.exp(base[0]).sum(1, keepdims=True)
    q = np.exp(other[0]) / np.exp(other[0]).sum(1, keepdims=True)
    assert f.kl == pytest.approx(float((p * np.log(p / q)).sum(1).mean()), rel=1e-6)
    with pytest.raises(KaldiCompressError, match="shapes"):
        compare_outputs(base, [other[0][:1]])


@pytest.fixture(scope="module")
def two_wavs(kspon_ko, tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    for name in ("wav_001.wav", "wav_002.wav"):
        (d / name).symlink_to(kspon_ko / name)
    (d / "text").write_text("wav_001 a\nwav_002 b\n")
    return d


def _perturbed(ko_mdl, scale: float, path):
    model = read_model(str(ko_mdl))
    comp = model.nnet.components["output.affine"]
    w = comp["<LinearParams>"]
    noise = np.random.default_rng(0).normal(size=w.shape).astype(w.dtype)
    comp.set("<LinearParams>", w + scale * np.abs(w).mean() * noise)
    write_model(model, str(path))
    return model


def test_fidelity_on_speech(ko_mdl, ko_model_dir, two_wavs, tmp_path):
    base = read_model(str(ko_mdl)).nnet
    same = fidelity(base, read_model(str(ko_mdl)).nnet, ko_model_dir, two_wavs)
    assert same.utterances == 2 and same.frames == 171 + 186
    assert same.snr_db == math.inf and same.agreement == 100.0 and same.kl == 0.0
    small = fidelity(base, _perturbed(ko_mdl, 0.05, tmp_path / "a.mdl").nnet,
                     ko_model_dir, two_wavs)
    large = fidelity(base, _perturbed(ko_mdl, 1.0, tmp_path / "b.mdl").nnet,
                     ko_model_dir, two_wavs)
    assert math.inf > small.snr_db > large.snr_db
    assert 0 < small.kl < large.kl
    assert 100.0 >= small.agreement > large.agreement


def test_cli_fidelity(ko_mdl, ko_model_dir, two_wavs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "fidelity", fidelity_cmd)
    other = tmp_path / "other.mdl"
    _perturbed(ko_mdl, 0.5, other)
    rc = cli.main(["fidelity", f"--model-dir={ko_model_dir}", f"--data={two_wavs}",
                   "--json", str(ko_mdl), str(other)])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["utterances"] == 2 and report["frames"] == 357
    assert 0 < report["snr_db"] < 100 and report["kl"] > 0
    rc = cli.main(["fidelity", f"--model-dir={ko_model_dir}", f"--data={tmp_path}",
                   str(ko_mdl), str(other)])
    err = capsys.readouterr().err
    assert rc == 1 and "no *.wav" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def two_wav_tables(two_wavs, ko_model_dir, tmp_path_factory) -> dict:
    """The two wavs' features and online i-vectors (no dither) as a recipe's tables."""
    d = tmp_path_factory.mktemp("tables")
    front = ModelDirFrontEnd(ko_model_dir, 0.0)
    pairs = {w.stem: front.features(w) for w in sorted(two_wavs.glob("*.wav"))}
    for name, which in (("feats", 0), ("ivectors", 1)):
        write_ark_scp(d / f"{name}.ark", {key: pair[which] for key, pair in pairs.items()})
    return {"feats": f"scp:{d / 'feats.scp'}", "ivectors": f"scp:{d / 'ivectors.scp'}",
            "period": front.ivector_period, "fsf": front.frame_subsampling_factor}


def test_fidelity_from_tables_equals_fidelity_from_wavs(ko_mdl, ko_model_dir, two_wavs,
                                                       two_wav_tables, tmp_path):
    """The same features through a Kaldi table or the wav front end: the same numbers."""
    t = two_wav_tables
    base = read_model(str(ko_mdl)).nnet
    other = _perturbed(ko_mdl, 0.5, tmp_path / "o.mdl").nnet
    want = fidelity(base, other, ko_model_dir, two_wavs, dither=0.0)
    got = fidelity_tables(base, other, t["feats"], t["ivectors"], t["period"],
                          frame_subsampling_factor=t["fsf"])
    assert got == want and want.frames == 171 + 186 and 0 < want.kl
    first = fidelity_tables(base, other, t["feats"], t["ivectors"], t["period"],
                            frame_subsampling_factor=t["fsf"], max_utts=1)
    assert (first.utterances, first.frames) == (1, 171)


def test_batches_do_not_change_the_comparison(ko_mdl, two_wav_tables, tmp_path):
    """compare_networks holds ``batch`` utterances at a time: one at a time gives the
    same metrics (up to float rounding of differently batched products)."""
    from kaldi_compress.compute import ComputeOptions
    from kaldi_compress.io.tables import read_matrices, read_matrix_dict
    t = two_wav_tables
    ivectors = read_matrix_dict(t["ivectors"])
    utts = [(m, ivectors[k]) for k, m in read_matrices(t["feats"])]
    opts = ComputeOptions(frame_subsampling_factor=t["fsf"], online_ivector_period=t["period"])
    base = read_model(str(ko_mdl)).nnet
    other = _perturbed(ko_mdl, 0.5, tmp_path / "o.mdl").nnet
    whole, single = (compare_networks(base, other, iter(utts), opts, batch=b) for b in (16, 1))
    assert single.frames == whole.frames and single.agreement == whole.agreement
    assert single.snr_db == pytest.approx(whole.snr_db, rel=1e-5)
    assert single.kl == pytest.approx(whole.kl, rel=1e-4)


def test_cli_fidelity_from_tables(ko_mdl, ko_model_dir, two_wavs, two_wav_tables, tmp_path,
                                  monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "fidelity", fidelity_cmd)
    t = two_wav_tables
    other = tmp_path / "other.mdl"
    _perturbed(ko_mdl, 0.5, other)
    reports = []
    for data in ([f"--model-dir={ko_model_dir}", f"--data={two_wavs}", "--dither=0"],
                 [f"--feats={t['feats']}", f"--online-ivectors={t['ivectors']}",
                  f"--online-ivector-period={t['period']}",
                  f"--frame-subsampling-factor={t['fsf']}"]):
        assert cli.main(["fidelity", *data, "--json=true", str(ko_mdl), str(other)]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    assert reports[0] == reports[1] and reports[0]["utterances"] == 2


@pytest.mark.parametrize("args, message", [
    (["--feats=scp:f.scp", "--data=d"], "give --feats or --model-dir with --data, not --data"),
    (["--online-ivectors=scp:i.scp"], "--online-ivectors needs --feats"),
    (["--max-utts=3", "--model-dir=m", "--data=d"], "--max-utts needs --feats"),
    ([], "fidelity needs --model-dir DIR and --data DIR, or --feats RSPEC"),
    (["--feats=scp:f.scp", "--online-ivectors=scp:i.scp"], "needs --online-ivector-period > 0"),
])
def test_cli_fidelity_option_errors(ko_mdl, args, message, monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "fidelity", fidelity_cmd)
    assert cli.main(["fidelity", *args, str(ko_mdl), str(ko_mdl)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
