"""Kaldi's random numbers on glibc, reproduced: the dither of ``compute-mfcc-feats``.

Kaldi's ``Dither`` (feat/feature-window.cc) adds ``dither * RandGauss(&state)`` to every
sample of a frame, with a fresh ``RandomState`` per frame whose seed is
``rand() + 27437`` -- one call of the process-wide glibc ``rand()``, never seeded by
Kaldi's binaries, so the stream is glibc's ``srand(1)`` sequence.  Inside a frame

    rand_r:    s <- 1103515245 s + 12345 (mod 2^32), three steps give 11+10+10 bits
    uniform:   u = float((r + 1) / (RAND_MAX + 2)),  RAND_MAX = 2^31 - 1
    RandGauss: g = sqrtf(-2 logf(u1)) * cosf(2 pi u2),  u1 drawn before u2

so a process that computes the same utterances in the same order draws the same noise.
"""
from __future__ import annotations

import numpy as np

RAND_MAX = 2**31 - 1
_MASK = 2**32 - 1
_BLOCK = 512               # frames per vectorised block (6 x 8 bytes per sample each)
_LCG_A, _LCG_C = 1103515245, 12345
SEED_OFFSET = 27437        # RandomState::RandomState(): seed = Rand() + 27437


class GlibcRand:
    """glibc's ``rand()`` (the TYPE_3 additive feedback generator) from ``srand(seed)``.

    r[0] = seed, r[i] = 16807 r[i-1] mod (2^31 - 1) for i < 31, r[i] = r[i-31] for
    i < 34, then r[i] = r[i-31] + r[i-3] (mod 2^32); the k-th output is r[k+344] >> 1.
    """

    def __init__(self, seed: int = 1):
        r = [seed & _MASK]
        for _ in range(1, 31):
            r.append(16807 * r[-1] % RAND_MAX)
        r += r[:3]
        self._r = r
        self._draw(310)

    def _draw(self, n: int) -> list[int]:
        r = self._r                                     # the last 34 states
        for _ in range(n):
            r.append((r[-31] + r[-3]) & _MASK)
        self._r = r[-34:]
        return r[34:]

    def rand(self, n: int) -> np.ndarray:
        """The next ``n`` values of ``rand()``."""
        return np.array([v >> 1 for v in self._draw(n)], dtype=np.int64)


def _lcg_powers(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(A_k, C_k) with the k-th LCG state s_k = A_k s_0 + C_k (mod 2^32), k = 1..steps."""
    a, c = np.empty(steps, np.uint64), np.empty(steps, np.uint64)
    ak, ck = 1, 0
    for k in range(steps):
        ak, ck = ak * _LCG_A & _MASK, (ck * _LCG_A + _LCG_C) & _MASK
        a[k], c[k] = ak, ck
    return a, c


def rand_gauss(seeds: np.ndarray, n: int) -> np.ndarray:
    """``n`` successive ``RandGauss(&state)`` for a ``RandomState`` per seed: (len, n) float32."""
    a, c = _lcg_powers(6 * n)
    s = seeds.astype(np.uint64)[:, None] & np.uint64(_MASK)
    states = (s * a + c) & np.uint64(_MASK)                     # every rand_r step at once
    hi = (states >> np.uint64(16)).reshape(len(seeds), 2 * n, 3)
    r = ((hi[..., 0] % 2048) << np.uint64(20)) ^ ((hi[..., 1] % 1024) << np.uint64(10)) \
        ^ (hi[..., 2] % 1024)
    u = ((r.astype(np.float64) + 1.0) / (RAND_MAX + 2.0)).astype(np.float32)
    u1, u2 = u[:, 0::2], u[:, 1::2]
    # float64 results rounded to float32 equal glibc's logf/cosf but for an ulp at times
    log_u1 = np.log(u1.astype(np.float64)).astype(np.float32)
    angle = (2 * np.pi * u2.astype(np.float64)).astype(np.float32)
    return np.sqrt(np.float32(-2) * log_u1) * np.cos(angle.astype(np.float64)).astype(np.float32)


class KaldiDither:
    """The dither noise of one Kaldi process: frame after frame, utterance after utterance."""

    def __init__(self, dither: float):
        self.dither = np.float32(dither)
        self._rand = GlibcRand()

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """``frames`` (frames x window samples, float32) with Kaldi's noise added in place."""
        seeds = (self._rand.rand(len(frames)) + SEED_OFFSET) & _MASK
        for i in range(0, len(frames), _BLOCK):
            frames[i:i + _BLOCK] += rand_gauss(seeds[i:i + _BLOCK], frames.shape[1]) * self.dither
        return frames
