"""``kaldi-compress wer [--cer] [--normalize=none|korean] REF HYP``: like compute-wer.

Prints compute-wer's three lines (``--mode=present``: reference utterances without a
hypothesis are not scored and the ``%WER`` line is marked ``[PARTIAL]``).
"""
from __future__ import annotations

from ..errors import KaldiCompressError
from ..evaluate.scoring import NORMALIZERS, score
from ..io.tables import read_transcripts
from .shared import add_scoring_options


def add_parser(sub, kaldi_bool) -> None:
    p = sub.add_parser("wer", help="word (or character) error rate of Kaldi text files",
                       description="Score hypotheses against references, both Kaldi text "
                       "files ('utt-id words...'), and print what compute-wer "
                       "--mode=present prints.")
    add_scoring_options(p, kaldi_bool)
    p.add_argument("ref", help="reference text file (- for stdin)")
    p.add_argument("hyp", help="hypothesis text file (- for stdin)")


def run(args) -> int:
    if args.ref == "-" and args.hyp == "-":
        raise KaldiCompressError("only one of REF and HYP can be read from stdin")
    refs, hyps = read_transcripts(args.ref), read_transcripts(args.hyp)
    result = score(refs, hyps, unit="char" if args.cer else "word",
                   normalize=NORMALIZERS[args.normalize])
    if not refs:
        raise KaldiCompressError(f"{args.ref}: no utterances (expected 'utt-id words...' lines)")
    if result.n_sent == 0:
        raise KaldiCompressError(f"{args.hyp}: none of the {len(refs)} utterances of "
                                 f"{args.ref} has a hypothesis")
    print(result.format(), end="")
    return 0
