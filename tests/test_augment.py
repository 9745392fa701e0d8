"""Kaldi-style speed and volume perturbation of the unlabeled fine-tuning audio."""
from __future__ import annotations

import math

import numpy as np
import pytest

from kaldi_compress.errors import KaldiCompressError
from kaldi_compress.finetune import wav_corpus
from kaldi_compress.finetune.augment import (Perturbation, parse_speeds, speed_perturb,
                                             to_pcm16)
from kaldi_compress.frontend.mfcc import read_wav
from kaldi_compress.frontend.model_dir import ModelDirFrontEnd

RATE = 16000


def tone(freq: float, seconds: float = 1.0, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return to_pcm16(amplitude * np.sin(2 * np.pi * freq * t))


def peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * RATE / len(samples))


@pytest.fixture(scope="module")
def short_wavs(ko_wide_train):
    """The three shortest tuning wavs (2.0-2.5 s)."""
    return sorted(ko_wide_train.glob("*.wav"), key=lambda w: w.stat().st_size)[:3]


def test_speed_changes_length_and_pitch_by_the_factor():
    x = tone(1000.0)
    for factor, num, den in ((0.9, 9, 10), (1.1, 11, 10), (0.95, 19, 20)):
        y = speed_perturb(x, factor)
        assert len(y) == math.ceil(len(x) * den / num)          # n / f samples at rate r
        assert peak_hz(y) == pytest.approx(1000.0 * factor, abs=2.0)   # tempo and pitch
    assert speed_perturb(x, 1.0) is x


def test_speed_on_real_audio(short_wavs):
    samples, rate = read_wav(short_wavs[0])
    assert rate == RATE
    copies = list(Perturbation((0.9, 1.0, 1.1)).copies([("d/u", samples, rate)]))
    assert [k for k, _, _ in copies] == ["sp0.9-d/u", "d/u", "sp1.1-d/u"]
    for (_, y, r), factor in zip(copies, (0.9, 1.0, 1.1)):
        assert r == rate and abs(len(y) - len(samples) / factor) < 1
        assert y.dtype == np.float32 and np.array_equal(y, np.rint(y))
    assert np.array_equal(copies[1][1], samples)                 # 1.0 is the audio itself
    # speed perturbation keeps the level (no gain): RMS within 2%
    rms = [float(np.sqrt(np.mean(y.astype(np.float64) ** 2))) for _, y, _ in copies]
    assert max(rms) / min(rms) < 1.02


def gains_of(copies, originals) -> np.ndarray:
    """Least-squares gain g of every copy y = g x."""
    return np.array([float(y @ x) / float(x @ x) for (_, y, _), x in zip(copies, originals)])


def test_volume_gains_are_uniform_in_kaldis_range_and_seeded():
    rng = np.random.default_rng(7)
    originals = [to_pcm16(rng.normal(0, 1000, 800)) for _ in range(300)]
    utts = [(f"u{i}", x, RATE) for i, x in enumerate(originals)]
    copies = list(Perturbation(volume=True, seed=3).copies(utts))
    g = gains_of(copies, originals)
    assert g.min() >= 0.125 - 1e-3 and g.max() <= 2.0 + 1e-3
    assert g.min() < 0.2 and g.max() > 1.9 and abs(g.mean() - 1.0625) < 0.08
    drawn = np.random.default_rng(3).uniform(0.125, 2.0, len(utts))   # in corpus order
    assert np.abs(g - drawn).max() < 1e-3
    for (_, y, _), x, gain in zip(copies, originals, drawn):
        assert np.abs(y - gain * x).max() <= 0.5 + 1e-6         # rounded to 16-bit values
    again = list(Perturbation(volume=True, seed=3).copies(utts))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(copies, again))
    other = gains_of(Perturbation(volume=True, seed=4).copies(utts), originals)
    assert np.abs(other - g).max() > 0.1
    loud = list(Perturbation(volume=True, seed=3).copies([("x", tone(50.0, 0.1, 32000.0), RATE)]
                                                         * 20))
    assert max(y.max() for _, y, _ in loud) == 32767                  # clipped as 16-bit
    assert min(y.min() for _, y, _ in loud) == -32768


def test_speed_and_volume_copies_take_one_gain_each():
    x = tone(440.0, 0.5, 1000.0)
    copies = list(Perturbation((0.9, 1.0, 1.1), volume=True, seed=0).copies([("u", x, RATE)]))
    gains = np.random.default_rng(0).uniform(0.125, 2.0, 3)
    assert [k for k, _, _ in copies] == ["sp0.9-u", "u", "sp1.1-u"]
    assert np.abs(copies[1][1] - gains[1] * x).max() <= 0.5 + 1e-3
    assert np.abs(copies[2][1] - to_pcm16(speed_perturb(x, 1.1), gains[2])).max() == 0


@pytest.mark.parametrize("text", ["", "0.9,,1.1", "fast", "0", "-1", "0.9,0.9", "nan", "9"])
def test_bad_speed_lists_are_one_line(text):
    with pytest.raises(KaldiCompressError, match="--speed-perturb: expected") as e:
        parse_speeds(text)
    assert "\n" not in str(e.value)


def test_speed_list():
    assert parse_speeds("0.9,1.0,1.1") == (0.9, 1.0, 1.1)
    assert parse_speeds("1") == (1.0,) and Perturbation(parse_speeds("1")).identity


def test_perturbed_corpus_has_the_features_of_the_perturbed_audio(ko_model_dir, short_wavs,
                                                                  tmp_path):
    """Copies are featurized (MFCC and online i-vectors) from their own samples; without
    perturbation the corpus is exactly the wavs' features."""
    d = tmp_path / "train"
    d.mkdir()
    for w in short_wavs[:2]:
        (d / w.name).symlink_to(w)
    front = ModelDirFrontEnd(ko_model_dir, dither=0.0)
    plain = wav_corpus(ko_model_dir, [d], dither=0.0)
    for u, w in zip(plain.utterances, sorted(d.glob("*.wav"))):
        feats, ivectors = front.features(w)
        assert u.key == f"train/{w.stem}"
        assert np.array_equal(u.feats, feats) and np.array_equal(u.ivectors, ivectors)
    sped = wav_corpus(ko_model_dir, [d], dither=0.0, perturb=Perturbation((0.9, 1.0, 1.1)))
    assert [u.key for u in sped.utterances] == [
        f"{p}{u.key}" for u in plain.utterances for p in ("sp0.9-", "", "sp1.1-")]
    for i, u in enumerate(plain.utterances):
        slow, same, fast = sped.utterances[3 * i:3 * i + 3]
        assert np.array_equal(same.feats, u.feats)
        assert abs(len(slow.feats) - len(u.feats) / 0.9) <= 2
        assert abs(len(fast.feats) - len(u.feats) / 1.1) <= 2
        x, rate = read_wav(sorted(d.glob("*.wav"))[i])
        feats, ivectors = front.samples_features(to_pcm16(speed_perturb(x, 0.9)), rate)
        assert np.array_equal(slow.feats, feats) and np.array_equal(slow.ivectors, ivectors)
