"""Kaldi's random numbers (glibc rand/rand_r, RandGauss) and the dithered MFCC path."""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import subprocess
import sys

import numpy as np
import pytest

from kaldi_compress.frontend.kaldi_rand import RAND_MAX, GlibcRand, KaldiDither, rand_gauss
from kaldi_compress.frontend.mfcc import MfccConfig, compute_mfcc, frame_windows

libc_name = ctypes.util.find_library("c")
needs_glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or not libc_name,
                                 reason="compares with the C library's rand()/rand_r (glibc)")


@needs_glibc
def test_glibc_rand_equals_the_c_library():
    """In a fresh process (never seeded, as in Kaldi's binaries) rand() is our stream."""
    code = ("import ctypes, ctypes.util; c = ctypes.CDLL(ctypes.util.find_library('c')); "
            "print(' '.join(str(c.rand()) for _ in range(3000)))")
    libc = [int(v) for v in subprocess.run([sys.executable, "-c", code], capture_output=True,
                                           text=True, check=True).stdout.split()]
    assert GlibcRand().rand(3000).tolist() == libc
    g = GlibcRand()
    assert np.concatenate([g.rand(1000), g.rand(0), g.rand(2000)]).tolist() == libc


@needs_glibc
def test_rand_gauss_equals_kaldi_formula_on_rand_r():
    """RandGauss(&state) = sqrtf(-2 logf(u1)) cosf(2 pi u2) with u = (rand_r + 1)/(RAND_MAX + 2)."""
    libc, libm = ctypes.CDLL(libc_name), ctypes.CDLL(ctypes.util.find_library("m"))
    for fn in (libm.logf, libm.cosf, libm.sqrtf):         # the functions Kaldi calls
        fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    seeds = np.array([27437, 1804289383 + 27437, 2**32 - 1, 5], dtype=np.int64)
    ours = rand_gauss(seeds, 50)
    f32 = np.float32
    for row, seed in zip(ours, seeds):
        state = ctypes.c_uint(int(seed))
        for g in row:
            u1 = f32((libc.rand_r(ctypes.byref(state)) + 1.0) / (RAND_MAX + 2.0))
            u2 = f32((libc.rand_r(ctypes.byref(state)) + 1.0) / (RAND_MAX + 2.0))
            ref = f32(libm.sqrtf(f32(-2 * libm.logf(u1)))) * f32(libm.cosf(2 * math.pi * float(u2)))
            assert abs(g - ref) <= 3e-7 * abs(ref)  # glibc's logf/cosf are off by an ulp at times
    assert abs(ours.mean()) < 0.1 and abs(ours.std() - 1) < 0.1


@pytest.mark.parametrize("snip", ["true", "false"])
def test_dithered_path_cuts_frames_as_kaldi(snip):
    """With a vanishing dither the per-window path equals kaldi-native-fbank's own framing."""
    x = np.random.default_rng(0).normal(0, 3000, 16000 + 77).astype(np.float32)
    plain = compute_mfcc(x, 16000, MfccConfig({"dither": "0", "snip-edges": snip}))
    tiny = compute_mfcc(x, 16000, MfccConfig({"dither": "1e-20", "snip-edges": snip}))
    assert plain.shape == tiny.shape == ((98 if snip == "true" else 100), 13)
    np.testing.assert_array_equal(plain, tiny)


def test_frame_windows_reflect_at_the_edges():
    x = np.arange(10, dtype=np.float32)
    w = frame_windows(x, shift=4, length=8, snip_edges=False)
    assert w.shape == (3, 8)                   # round(10 / 4) frames
    assert w[0].tolist() == [1, 0, 0, 1, 2, 3, 4, 5]     # starts at 2 - 4 = -2
    assert w[2].tolist() == [6, 7, 8, 9, 9, 8, 7, 6]
    assert frame_windows(x, 4, 8, True).shape == (1, 8)
    assert frame_windows(x[:3], 4, 8, True).shape == (0, 8)


def test_dither_stream_continues_across_utterances():
    """One process's noise: the second utterance gets other noise than a fresh process's."""
    x = np.zeros(4000, dtype=np.float32)
    cfg = MfccConfig({"dither": "1"})
    stream = KaldiDither(1.0)
    first, second = (compute_mfcc(x, 16000, cfg, stream) for _ in range(2))
    np.testing.assert_array_equal(first, compute_mfcc(x, 16000, cfg))
    assert not np.array_equal(first, second)
