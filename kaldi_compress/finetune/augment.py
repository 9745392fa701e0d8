"""Kaldi-style perturbation of unlabeled training audio: speed and volume.

- Speed (``utils/data/perturb_data_dir_speed_3way.sh``, i.e. ``sox ... speed f``):
  the audio plays f times as fast, tempo and pitch together: a copy of n samples at
  rate r becomes ceil(n / f) samples at the same rate r (a tone at F Hz moves to
  f F Hz).  f is taken as the nearest fraction p/q with q <= 100 and the samples are
  resampled by q/p with :func:`scipy.signal.resample_poly` (polyphase FIR,
  Kaiser-windowed).  Copies get Kaldi's keys ``sp{f}-{key}``; factor 1 keeps the
  audio and the key as they are.
- Volume (``utils/data/perturb_data_dir_volume.sh``, i.e. ``sox --vol g``): every
  copy is scaled by its own gain g, uniform in [0.125, 2], drawn in corpus order
  from a generator seeded by the run's seed.

Like the wavs sox writes into Kaldi's pipes, perturbed samples are rounded to
16-bit integers and clipped to [-32768, 32767] (sox's own dither is not
reproduced).  The teacher's targets for a copy are its outputs on the copy's own
features and i-vectors.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Iterator

import numpy as np

from ..errors import KaldiCompressError

VOLUME_LOW, VOLUME_HIGH = 0.125, 2.0


def parse_speeds(text: str) -> tuple[float, ...]:
    """``"0.9,1.0,1.1"`` -> (0.9, 1.0, 1.1)."""
    try:
        speeds = tuple(float(s) for s in text.split(","))
    except ValueError:
        speeds = ()
    check_speeds(speeds, text)
    return speeds


def check_speeds(speeds: tuple[float, ...], given: object = None) -> None:
    """At least one speed factor, all distinct and in [0.25, 4]."""
    if not speeds or not all(0.25 <= s <= 4 for s in speeds) or len(set(speeds)) != len(speeds):
        raise KaldiCompressError(f"--speed-perturb: expected distinct comma-separated factors "
                                 f"in [0.25, 4] such as 0.9,1.0,1.1, got {given or speeds!r}")


def speed_key(key: str, factor: float) -> str:
    """Kaldi's utterance id of a speed-perturbed copy (the key itself for factor 1)."""
    return key if factor == 1.0 else f"sp{factor:g}-{key}"


def speed_perturb(samples: np.ndarray, factor: float) -> np.ndarray:
    """The samples played ``factor`` times as fast at the same rate (see the module
    docstring); factor 1 returns ``samples`` itself."""
    if factor == 1.0:
        return samples
    f = Fraction(factor).limit_denominator(100)
    from scipy.signal import resample_poly
    return resample_poly(samples.astype(np.float64), f.denominator, f.numerator)


def to_pcm16(samples: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """gain x samples (in float64) as a 16-bit wav holds them: rounded and clipped, as
    float32."""
    return np.clip(np.rint(samples.astype(np.float64) * gain), -32768, 32767).astype(np.float32)


@dataclass(frozen=True)
class Perturbation:
    """Which copies of every utterance to train on."""
    speeds: tuple[float, ...] = (1.0,)   # one copy per factor
    volume: bool = False                 # a random gain per copy
    seed: int = 0                        # of the gains

    @property
    def identity(self) -> bool:
        """Only the audio as it is."""
        return self.speeds == (1.0,) and not self.volume

    def check(self) -> None:
        check_speeds(self.speeds)

    def copies(self, utterances: Iterable[tuple[str, np.ndarray, int]]
               ) -> Iterator[tuple[str, np.ndarray, int]]:
        """(key, samples, rate) of every copy of (key, samples, rate) utterances: for each
        utterance, one per speed factor in order, each scaled by the next gain (1 without
        ``volume``); the rate stays."""
        rng = np.random.default_rng(self.seed)
        for key, samples, rate in utterances:
            for factor in self.speeds:
                gain = rng.uniform(VOLUME_LOW, VOLUME_HIGH) if self.volume else 1.0
                yield speed_key(key, factor), to_pcm16(speed_perturb(samples, factor), gain), rate
