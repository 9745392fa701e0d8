"""Word and character error rates, counted as Kaldi's ``compute-wer --mode=present`` does.

Each reference utterance that has a hypothesis is aligned to it with a minimum edit
distance (Levenshtein, unit costs; the alignment comes from ``kaldialign``).  With
``I``, ``D``, ``S`` the insertions, deletions and substitutions summed over utterances
and ``N`` the number of reference tokens::

    WER = 100 * (I + D + S) / N          SER = 100 * (utterances with any error) / n_sent

Reference utterances without a hypothesis are left out and reported as missing (the
``--mode=present`` rule); hypotheses without a reference are ignored.  For the
character unit (CER) all whitespace is removed first and every character is a token:
the convention for Korean, whose word spacing is inconsistent.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import kaldialign
import numpy as np

from ..errors import KaldiCompressError

Normalizer = Callable[[str], str]


def align_counts(ref_tokens: Sequence[str], hyp_tokens: Sequence[str]
                 ) -> tuple[int, int, int, int]:
    """(insertions, deletions, substitutions, reference length) of a minimum-edit alignment."""
    d = kaldialign.edit_distance(ref_tokens, hyp_tokens)
    return d["ins"], d["del"], d["sub"], len(ref_tokens)


UNITS = ("word", "char")


def tokens(text: str, unit: str) -> list[str]:
    """Words split on whitespace (``word``), or characters with whitespace removed (``char``)."""
    return text.split() if unit == "word" else list("".join(text.split()))


def kaldi_percent(num: int, den: int) -> str:
    """``100*num/den`` with two decimals, rounded through float32 as compute-wer does."""
    if den == 0:
        return "nan" if num == 0 else "inf"
    return f"{float(np.float32(100.0 * num / den)):.2f}"


@dataclass(frozen=True)
class ScoreResult:
    """Error counts summed over the scored utterances."""
    unit: str                   # "word" or "char"
    ins: int
    dels: int
    subs: int
    n_ref: int                  # reference tokens in the scored utterances
    n_sent: int                 # utterances scored
    sent_errors: int            # scored utterances whose hypothesis differs at all
    missing: tuple[str, ...]    # reference utterances with no hypothesis (not scored)

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.subs

    @property
    def rate(self) -> float:
        """WER or CER in percent, unrounded (nan when nothing was scored)."""
        if self.n_ref == 0:
            return float("nan") if self.errors == 0 else float("inf")
        return 100.0 * self.errors / self.n_ref

    def format(self) -> str:
        """The three lines compute-wer prints (``%CER`` instead of ``%WER`` for characters)."""
        label = "%WER" if self.unit == "word" else "%CER"
        partial = " [PARTIAL]" if self.missing else ""
        return (f"{label} {kaldi_percent(self.errors, self.n_ref)} [ {self.errors} / "
                f"{self.n_ref}, {self.ins} ins, {self.dels} del, {self.subs} sub ]{partial}\n"
                f"%SER {kaldi_percent(self.sent_errors, self.n_sent)} "
                f"[ {self.sent_errors} / {self.n_sent} ]\n"
                f"Scored {self.n_sent} sentences, {len(self.missing)} not present in hyp.\n")


def score(refs: Mapping[str, str], hyps: Mapping[str, str], unit: str = "word",
          normalize: Normalizer | None = None) -> ScoreResult:
    """Score ``hyps`` against ``refs`` (both utt-id -> transcript), in reference order."""
    if unit not in UNITS:
        raise KaldiCompressError(f"unknown scoring unit {unit!r}: expected 'word' or 'char'")
    ins = dels = subs = n_ref = n_sent = sent_errors = 0
    missing = []
    for utt, ref_text in refs.items():
        if utt not in hyps:
            missing.append(utt)
            continue
        hyp_text = hyps[utt]
        if normalize is not None:
            ref_text, hyp_text = normalize(ref_text), normalize(hyp_text)
        ref, hyp = tokens(ref_text, unit), tokens(hyp_text, unit)
        i, d, s, n = align_counts(ref, hyp)
        ins, dels, subs, n_ref = ins + i, dels + d, subs + s, n_ref + n
        n_sent += 1
        sent_errors += ref != hyp
    return ScoreResult(unit, ins, dels, subs, n_ref, n_sent, sent_errors, tuple(missing))


_NOISE_WORDS = {"<unk>", "<spoken_noise>", "<noise>", "!sil", "[unk]"}
_SPACES = re.compile(r"\s+")


def korean_normalize(text: str) -> str:
    """Text normalisation for Korean references and Vosk-Korean hypotheses.

    NFKC (full-width forms, compatibility units), drop noise/unknown tokens such as
    ``<UNK>`` or ``<SPOKEN_NOISE>``, then delete every punctuation character: the model's
    annotation brackets go but their contents stay (``[60]`` -> ``60``, ``(십)`` -> ``십``,
    ``{만}`` -> ``만``); lowercase and collapse whitespace.
    """
    text = unicodedata.normalize("NFKC", text)
    words = [w for w in text.split() if w.lower() not in _NOISE_WORDS]
    text = "".join(c for c in " ".join(words) if not unicodedata.category(c).startswith("P"))
    return _SPACES.sub(" ", text.lower()).strip()


NORMALIZERS: dict[str, Normalizer | None] = {"none": None, "korean": korean_normalize}
