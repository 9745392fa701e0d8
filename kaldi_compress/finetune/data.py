"""Unlabeled training audio as network inputs: features [+ online i-vectors] per utterance.

Two sources, both held in memory for the whole run (a large table is streamed
instead, :mod:`.stream`):

- wav directories, through a Vosk-style model directory's front end
  (:class:`~kaldi_compress.frontend.model_dir.ModelDirFrontEnd`: MFCC, online i-vectors);
- Kaldi tables (``--feats=RSPEC [--online-ivectors=RSPEC --online-ivector-period=N]``),
  e.g. ``scp:data/train/feats.scp`` or a piped ``ark:apply-cmvn-online ... |``.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import KaldiCompressError
from .augment import Perturbation


@dataclass
class Utterance:
    key: str
    feats: np.ndarray                  # (T, feat_dim) float32
    ivectors: np.ndarray | None        # (ceil(T / period), ivector_dim) float32, or None


@dataclass
class Corpus:
    """Utterances plus the settings that say how to read them."""
    utterances: list[Utterance]
    ivector_period: int = 0            # frames between i-vector rows (0: no i-vectors)
    frame_subsampling_factor: int = 0  # from conf/model.conf (0: unknown)

    @property
    def num_frames(self) -> int:
        return sum(len(u.feats) for u in self.utterances)


def _progress(items, desc: str, show: bool):
    if not show:
        return items
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit="utt", file=sys.stderr, leave=False)


def wav_files(data_dirs: list[str | Path]) -> list[tuple[str, Path]]:
    """(key ``dir-name/stem``, path) of every ``*.wav`` of the directories, sorted per dir."""
    wavs: list[tuple[str, Path]] = []
    for d in data_dirs:
        found = sorted(Path(d).glob("*.wav"))
        if not found:
            raise KaldiCompressError(f"{d}: no *.wav files")
        wavs += [(f"{Path(d).name}/{w.stem}", w) for w in found]
    return wavs


def check_disjoint(train_dirs: list[str | Path], valid_dirs: list[str | Path]) -> None:
    """No validation wav may be a training wav (the same file, through any path or link)."""
    train = {w.resolve() for _, w in wav_files(train_dirs)}
    for _, w in wav_files(valid_dirs):
        if w.resolve() in train:
            raise KaldiCompressError(f"{w}: validation audio is also training audio "
                                     "(--valid-data overlaps --data)")


def wav_corpus(model_dir: str | Path, data_dirs: list[str | Path], dither: float | None = None,
               progress: bool = False, perturb: Perturbation = Perturbation()) -> Corpus:
    """Features of every ``*.wav`` of the data directories (keys ``dir-name/stem``), or of
    the copies ``perturb`` makes of them (:mod:`.augment`)."""
    from ..frontend.mfcc import read_wav
    from ..frontend.model_dir import ModelDirFrontEnd

    front = ModelDirFrontEnd(model_dir, dither)
    wavs = _progress(wav_files(data_dirs), "features", progress)
    utts = [Utterance(key, *front.samples_features(x, rate, key))
            for key, x, rate in perturb.copies((k, *read_wav(w)) for k, w in wavs)]
    return Corpus(utts, front.ivector_period, front.frame_subsampling_factor)


def table_corpus(feats_rspec: str, ivectors_rspec: str = "", ivector_period: int = 0) -> Corpus:
    """Features of a Kaldi table, with online i-vectors from another table (same keys)."""
    from ..io.tables import ivector_reader, read_matrices, usable_utterances

    ivectors = ivector_reader(ivectors_rspec, ivector_period)
    items = ((key, len(feats), feats) for key, feats in read_matrices(feats_rspec))
    utts = [Utterance(key, feats, None if ivectors is None else ivectors[key])
            for key, feats in usable_utterances(items, ivectors, feats_rspec)]
    return Corpus(utts, ivector_period if ivectors is not None else 0)
