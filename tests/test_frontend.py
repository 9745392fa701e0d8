"""MFCC and online i-vectors against Kaldi's compute-mfcc-feats / ivector-extract-online2."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from kaldi_compress.compute.chunking import ComputeOptions, SimpleComputer
from kaldi_compress.errors import KaldiCompressError
from kaldi_compress.frontend.ivector import (OnlineIvectorConfig, OnlineIvectorExtractor,
                                             linear_cgd, select_posteriors)
from kaldi_compress.frontend.ivector_models import DiagGmm
from kaldi_compress.frontend.mfcc import MfccConfig, compute_mfcc, read_wav, wav_mfcc
from kaldi_compress.frontend.model_dir import ModelDirFrontEnd
from kaldi_compress.io.binary import BinaryReader
from kaldi_compress.io.options import read_options
from kaldi_compress.io.tables import kaldi_io, read_matrix_dict
from kaldi_compress.nnet3 import read_model


def rel_err(y: np.ndarray, ref: np.ndarray) -> float:
    assert y.shape == ref.shape
    return float(np.abs(y - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def kaldi_feats(golden):
    d = golden / "ko_features"
    return {name: read_matrix_dict(f"ark:{d / name}.ark.txt")
            for name in ("mfcc", "mfcc_dither0", "ivectors")}


@pytest.fixture(scope="module")
def front(ko_model_dir):
    """Deterministic features (dither 0), as Kaldi's mfcc_dither0.ark.txt."""
    return ModelDirFrontEnd(ko_model_dir, dither=0.0)


def test_mfcc_matches_compute_mfcc_feats(kspon_ko, kaldi_feats, front):
    ref = kaldi_feats["mfcc_dither0"]
    assert list(ref) == ["wav_001", "wav_002", "wav_003", "wav_004"]
    for key, mat in ref.items():
        ours = wav_mfcc(kspon_ko / f"{key}.wav", front.mfcc)
        assert rel_err(ours, mat) < 1e-3, key


def test_ivectors_match_ivector_extract_online2(golden, ko_model_dir, kaldi_feats):
    opts = read_options(golden / "ko_features" / "ivector_extractor.conf")
    assert opts["max-count"] == "100"
    # the conf names files as model/ivector/...: resolve them in the real model dir
    extractor = OnlineIvectorExtractor(OnlineIvectorConfig.from_options(opts, ko_model_dir.parent))
    for key, feats in kaldi_feats["mfcc"].items():
        ref = kaldi_feats["ivectors"][key]
        ours = extractor.extract(feats)
        assert ours.shape == ref.shape == (-(-len(feats) // 10), 100)
        assert rel_err(ours, ref) < 1e-2, key


def test_vosk_defaults_equal_the_golden_config(golden, ko_model_dir):
    opts = read_options(golden / "ko_features" / "ivector_extractor.conf")
    golden_cfg = OnlineIvectorConfig.from_options(opts, ko_model_dir.parent)
    vosk_cfg = OnlineIvectorConfig.from_model_dir(ko_model_dir)
    assert {k: str(v) for k, v in vars(golden_cfg).items()} == \
        {k: str(v) for k, v in vars(vosk_cfg).items()}


def test_dithered_mfcc_matches_compute_mfcc_feats(kspon_ko, kaldi_feats, ko_model_dir, front):
    """Kaldi's dither noise reproduced: one front end, the wavs in the scp's order."""
    dithered = ModelDirFrontEnd(ko_model_dir)
    assert dithered.mfcc.dither == 1.0
    for key, mat in kaldi_feats["mfcc"].items():
        ours = wav_mfcc(kspon_ko / f"{key}.wav", dithered.mfcc, dithered.dither)
        assert rel_err(ours, mat) < 1e-3, key
        # without the noise, digitally silent frames are far off (c0 moves by ~130)
        assert rel_err(wav_mfcc(kspon_ko / f"{key}.wav", front.mfcc), mat) > 0.1


def test_end_to_end_from_wavs(kspon_ko, golden, kaldi_feats, ko_mdl, ko_model_dir):
    """Our dithered MFCC -> our i-vectors -> our forward pass, against nnet3-compute."""
    with gzip.open(golden / "ko_features" / "output.ark.txt.gz") as f:
        kaldi_out = dict(kaldi_io.read_mat_ark(f))
    front = ModelDirFrontEnd(ko_model_dir)
    assert front.frame_subsampling_factor == 3
    computer = SimpleComputer(read_model(str(ko_mdl)).nnet, ComputeOptions(
        frame_subsampling_factor=front.frame_subsampling_factor, online_ivector_period=10))
    for key in kaldi_out:                     # wav_001..wav_004: compute-mfcc-feats' order
        feats, ivectors = front.features(kspon_ko / f"{key}.wav")
        assert rel_err(ivectors, kaldi_feats["ivectors"][key]) < 1e-3, key    # measured <= 4e-4
        assert rel_err(computer.compute(feats, ivectors), kaldi_out[key]) < 1e-3, key  # <= 2.6e-4


def test_ubm_gconsts_match_the_stored_ones(ko_model_dir):
    path = ko_model_dir / "ivector" / "final.dubm"
    ubm = DiagGmm.read(path)
    r = BinaryReader(path.read_bytes(), str(path), 2)
    r.expect_token("<DiagGMM>")
    r.expect_token("<GCONSTS>")
    stored = r.read_vector()
    np.testing.assert_allclose(ubm.gconsts, stored, rtol=1e-5, atol=1e-3)


def test_posterior_selection_follows_kaldi_rules():
    rng = np.random.default_rng(0)
    ll = rng.normal(scale=3.0, size=(200, 64))
    ll[0] = -50.0
    ll[0, :3] = [0.0, np.log(0.5), np.log(0.01)]     # third is below min-post
    post = select_posteriors(ll, num_gselect=5, min_post=0.025)
    np.testing.assert_allclose(post.sum(1), 1.0)
    assert ((post > 0).sum(1) <= 5).all()
    np.testing.assert_allclose(post[0, :3], [1 / 1.5, 0.5 / 1.5, 0.0])
    assert (post.argmax(1) == ll.argmax(1)).all()
    # a kept entry is at least min-post times the total before pruning
    assert (post[post > 0] >= 0.025).all()


def test_linear_cgd_solves_positive_definite_systems():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(30, 30))
    A = a @ a.T + 30 * np.eye(30)
    b = rng.normal(size=30)
    x = linear_cgd(A, b, np.zeros(30), max_iters=100)
    np.testing.assert_allclose(A @ x, b, atol=1e-8)
    few = linear_cgd(A, b, np.zeros(30), max_iters=2)
    assert np.linalg.norm(A @ few - b) < np.linalg.norm(b)


def test_bad_inputs_are_one_line_errors(tmp_path, kspon_ko, front):
    conf = tmp_path / "mfcc.conf"
    conf.write_text("--num-ceps=13\n--made-up-option=1\n")
    with pytest.raises(KaldiCompressError, match="made-up-option"):
        MfccConfig.from_file(conf).knf_options()
    samples, rate = read_wav(kspon_ko / "wav_001.wav")
    with pytest.raises(KaldiCompressError, match="8000"):
        compute_mfcc(samples, 8000, front.mfcc)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(KaldiCompressError, match="cannot read wav"):
        read_wav(bad)
    with pytest.raises(KaldiCompressError, match="40-dim"):
        front.ivectors.extract(np.zeros((10, 13), dtype=np.float32))
    with pytest.raises(KaldiCompressError, match="not a model directory"):
        ModelDirFrontEnd(tmp_path)
