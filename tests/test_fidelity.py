"""Fidelity metrics: a network against itself and against perturbed copies."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kaldi_compress import cli
from kaldi_compress.cli import fidelity as fidelity_cmd
from kaldi_compress.compute.fidelity import compare_outputs, fidelity
from kaldi_compress.errors import KaldiCompressError
from kaldi_compress.nnet3 import read_model, write_model


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
