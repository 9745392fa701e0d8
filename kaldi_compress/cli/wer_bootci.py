"""``kaldi-compress wer-bootci [options] REF HYP [HYP2]``: like compute-wer-bootci.

Prints compute-wer-bootci's lines (bootstrap 95% interval of each set's WER, and with
HYP2 the probability that set 2 improves on set 1), then with HYP2 one line of ours:
the paired bootstrap difference of set 2 minus set 1 and its 95% percentile interval.
"""
from __future__ import annotations

import numpy as np

from ..errors import KaldiCompressError
from ..evaluate.bootstrap import (MODES, bootstrap_interval, difference_interval,
                                  improvement_probability, utterance_errors)
from ..evaluate.scoring import NORMALIZERS
from ..io.tables import read_transcripts
from .shared import add_scoring_options


def add_parser(sub, kaldi_bool) -> None:
    p = sub.add_parser("wer-bootci", help="bootstrap confidence intervals of WER (or CER)",
                       description="Bootstrap 95% confidence intervals of the WER of one or "
                       "two hypothesis sets against references (Kaldi text files), and the "
                       "probability that set 2 improves on set 1, as compute-wer-bootci "
                       "prints them; with HYP2 also the paired difference set 2 - set 1 and "
                       "its 95% percentile interval.")
    add_scoring_options(p, kaldi_bool)
    p.add_argument("--mode", choices=MODES, default="strict",
                   help="references without a hypothesis (in either set): present skips "
                   "them, all scores them as empty, strict (default) is an error")
    p.add_argument("--replications", "--nbootstrap", type=int, default=10000, metavar="N",
                   help="bootstrap replicates (default 10000)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="random seed (default 0; the same seed gives the same output)")
    p.add_argument("ref", help="reference text file (- for stdin)")
    p.add_argument("hyp", help="hypothesis text file (- for stdin)")
    p.add_argument("hyp2", nargs="?", help="second hypothesis text file, to compare with HYP")


def _interval_line(name: str, label: str, mean: float, half: float) -> str:
    return (f"{name}: {label} {100 * mean:.2f} 95% Conf Interval [ "
            f"{100 * mean - 100 * half:.2f}, {100 * mean + 100 * half:.2f} ]")


def run(args) -> int:
    paths = [p for p in (args.ref, args.hyp, args.hyp2) if p is not None]
    if paths.count("-") > 1:
        raise KaldiCompressError("only one of REF, HYP and HYP2 can be read from stdin")
    if args.replications < 1:
        raise KaldiCompressError(f"--replications (--nbootstrap) {args.replications}: "
                                 "expected at least 1 replicate")
    refs, *hyps = (read_transcripts(p) for p in paths)
    if not refs:
        raise KaldiCompressError(f"{args.ref}: no utterances (expected 'utt-id words...' lines)")
    unit = "char" if args.cer else "word"
    errors, lengths = utterance_errors(refs, hyps, unit, NORMALIZERS[args.normalize], args.mode)
    if len(lengths) == 0:
        raise KaldiCompressError(f"{' and '.join(paths[1:])}: none of the {len(refs)} "
                                 f"utterances of {args.ref} has a hypothesis"
                                 + (" in both" if len(hyps) > 1 else ""))
    label = "%WER" if unit == "word" else "%CER"
    n, rng = args.replications, np.random.default_rng(args.seed)
    lines = [_interval_line(f"Set{k}", label, *bootstrap_interval(e, lengths, n, rng))
             for k, e in enumerate(errors, 1)]
    if len(hyps) > 1:
        p = improvement_probability(errors[0], errors[1], n, rng)
        lines.append(f"Probability of Set2 improving Set1: {100 * p:.2f}")
        mean, lo, hi = difference_interval(errors[0], errors[1], lengths, n, rng)
        lines.append(f"Set2 - Set1: {label} {100 * mean:+.2f} 95% Conf Interval "
                     f"[ {100 * lo:+.2f}, {100 * hi:+.2f} ] (paired, percentiles)")
    print("\n".join(lines))
    return 0
