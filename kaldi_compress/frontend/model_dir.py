"""A Vosk-style model directory's front end: wav -> MFCC [+ online i-vectors].

The directory holds ``conf/mfcc.conf``, optionally ``conf/model.conf`` (read for
``--frame-subsampling-factor``) and, for i-vector models, ``ivector/`` (see
:meth:`OnlineIvectorConfig.from_model_dir`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import KaldiCompressError
from ..io.options import get_int, read_options
from .ivector import OnlineIvectorConfig, OnlineIvectorExtractor
from .kaldi_rand import KaldiDither
from .mfcc import MfccConfig, compute_mfcc, read_wav


class ModelDirFrontEnd:
    """Features for the network of a Vosk-style model directory."""

    def __init__(self, model_dir: str | Path, dither: float | None = None):
        """``dither`` overrides the MFCC config's (Kaldi's default is 1; 0 is deterministic).

        Dithered features continue one stream of Kaldi's noise from call to call, so
        the same wavs in the same order give the features of one compute-mfcc-feats run.
        """
        d = Path(model_dir)
        if not (d / "conf" / "mfcc.conf").is_file():
            raise KaldiCompressError(f"{d}: not a model directory (no conf/mfcc.conf)")
        extra = {} if dither is None else {"dither": repr(float(dither))}
        self.mfcc = MfccConfig.from_file(d / "conf" / "mfcc.conf", **extra)
        self.dither = KaldiDither(self.mfcc.dither) if self.mfcc.dither else None
        model_conf = d / "conf" / "model.conf"
        opts = read_options(model_conf) if model_conf.is_file() else {}
        self.frame_subsampling_factor = get_int(opts, "frame-subsampling-factor", 1)
        self.ivectors = None
        if (d / "ivector" / "final.ie").is_file():
            self.ivectors = OnlineIvectorExtractor(OnlineIvectorConfig.from_model_dir(d))

    @property
    def ivector_period(self) -> int:
        return self.ivectors.cfg.ivector_period if self.ivectors else 0

    def features(self, wav: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
        """(MFCC frames, online i-vectors or None) of a wav file."""
        return self.samples_features(*read_wav(wav), str(wav))

    def samples_features(self, samples: np.ndarray, rate: int, name: str = "audio"
                         ) -> tuple[np.ndarray, np.ndarray | None]:
        """The same of samples (16-bit integer values) at ``rate`` Hz; ``name`` for errors."""
        feats = compute_mfcc(samples, rate, self.mfcc, self.dither)
        if len(feats) == 0:
            raise KaldiCompressError(f"{name}: too short for a single frame")
        return feats, (self.ivectors.extract(feats) if self.ivectors else None)
