"""Bootstrap confidence intervals of WER, as Kaldi's ``compute-wer-bootci`` computes them.

Utterance ``i`` has ``e_i`` errors (minimum edit distance) against ``n_i`` reference
tokens.  A replicate draws as many utterances as there are, uniformly with replacement
(Bisani and Ney 2004), and takes ``W* = sum e* / sum n*``.  Over ``B`` replicates::

    interval:     mean(W*) +- 1.96 * std(W*)        (std with divisor B)
    improvement:  P(sum e1* - sum e2* > 0)           (set 2 strictly fewer errors)
    difference:   D* = (sum e2* - sum e1*) / sum n*  on one draw for both sets,
                  mean(D*) and its 2.5% and 97.5% percentiles

The last is ours, not Kaldi's.  Each statistic makes its own draws from ``rng``, in
call order, as Kaldi's three loops take turns on ``rand()``.  A replicate that draws
only empty references has an undefined rate (nan or inf), which then propagates as in
Kaldi; :func:`utterance_errors` refuses sets without any reference token.
"""
from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import numpy as np

from ..errors import KaldiCompressError
from .scoring import UNITS, Normalizer, align_counts, tokens

MODES = ("present", "all", "strict")
Z95 = 1.96
_MAX_DRAWS = 1 << 20       # utterance draws per batch of replicates (8 MB of indices)


def utterance_errors(refs: Mapping[str, str], hyps: Sequence[Mapping[str, str]],
                     unit: str = "word", normalize: Normalizer | None = None,
                     mode: str = "strict") -> tuple[np.ndarray, np.ndarray]:
    """(errors, lengths): errors (hypothesis sets x utterances), reference lengths, int64.

    Utterances in reference order.  A reference without a hypothesis in some set is
    dropped (``present``: from every set, keeping them paired), scored against an empty
    hypothesis (``all``), or an error (``strict``, Kaldi's default).
    """
    if unit not in UNITS:
        raise KaldiCompressError(f"unknown scoring unit {unit!r}: expected 'word' or 'char'")
    if mode not in MODES:
        raise KaldiCompressError(f"unknown mode {mode!r}: expected present, all or strict")
    errors: list[list[int]] = []
    lengths: list[int] = []
    for utt, ref_text in refs.items():
        absent = [k for k, h in enumerate(hyps, 1) if utt not in h]
        if absent and mode == "strict":
            raise KaldiCompressError(f"utterance {utt} has no hypothesis in set {absent[0]} "
                                     "(mode strict; present skips it, all scores it as empty)")
        if absent and mode == "present":
            continue
        texts = [ref_text] + [h.get(utt, "") for h in hyps]
        if normalize is not None:
            texts = [normalize(t) for t in texts]
        ref, *hyp_tokens = (tokens(t, unit) for t in texts)
        errors.append([sum(align_counts(ref, h)[:3]) for h in hyp_tokens])
        lengths.append(len(ref))
    if lengths and sum(lengths) == 0:
        raise KaldiCompressError(f"the {len(lengths)} scored references have no {unit}s: "
                                 "the error rate is undefined")
    return (np.array(errors, np.int64).reshape(len(lengths), len(hyps)).T,
            np.array(lengths, np.int64))


def _resampled_sums(columns: np.ndarray, replications: int, rng: np.random.Generator
                    ) -> Iterator[np.ndarray]:
    """Batches of replicates: ``columns`` (utterances x k) summed over a draw with
    replacement of as many rows, (batch x k); never more than ``_MAX_DRAWS`` indices.
    The arguments are checked now, the draws made as the batches are taken."""
    n = len(columns)
    if n == 0:
        raise KaldiCompressError("no utterances to resample")
    if replications < 1:
        raise KaldiCompressError(f"replications must be at least 1, got {replications}")
    batch = max(1, _MAX_DRAWS // n)
    return (columns[rng.integers(0, n, size=(min(batch, replications - start), n))].sum(axis=1)
            for start in range(0, replications, batch))


def bootstrap_interval(errors: np.ndarray, lengths: np.ndarray, replications: int,
                       rng: np.random.Generator) -> tuple[float, float]:
    """(mean of W*, 1.96 * std of W*): Kaldi's estimate and 95% half-width, as fractions."""
    batches = _resampled_sums(np.stack([errors, lengths], axis=1), replications, rng)
    # Moments about the corpus rate: no cancellation, and exactly 0 when W* is constant.
    s1 = s2 = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = errors.sum() / lengths.sum()
        for sums in batches:
            d = sums[:, 0] / sums[:, 1] - shift
            s1, s2 = s1 + d.sum(), s2 + (d * d).sum()
    mean = s1 / replications
    return float(shift + mean), float(Z95 * np.sqrt(max(s2 / replications - mean * mean, 0.0)))


def improvement_probability(errors1: np.ndarray, errors2: np.ndarray, replications: int,
                            rng: np.random.Generator) -> float:
    """Fraction of replicates in which set 2 makes strictly fewer errors than set 1."""
    diff = (errors1 - errors2)[:, None]
    wins = sum(int((sums[:, 0] > 0).sum()) for sums in _resampled_sums(diff, replications, rng))
    return wins / replications


def difference_interval(errors1: np.ndarray, errors2: np.ndarray, lengths: np.ndarray,
                        replications: int, rng: np.random.Generator
                        ) -> tuple[float, float, float]:
    """(mean, 2.5% and 97.5% percentiles) of the paired D* = W2* - W1*, as fractions
    (the percentiles need every D*: one float per replicate is kept)."""
    diff = errors2 - errors1
    batches = _resampled_sums(np.stack([diff, lengths], axis=1), replications, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = diff.sum() / lengths.sum()          # the mean about it is exact when constant
        deltas = np.concatenate([s[:, 0] / s[:, 1] for s in batches])
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return float(shift + (deltas - shift).mean()), float(lo), float(hi)
