"""``kaldi-compress compare [--format=...] [--plot=FILE.png] DIR [DIR ...]``.

The table of egs/wsj/s5's local/chain/compare_wer.sh for Kaldi model directories, plus
parameter counts, model sizes and real-time factors (see kaldi_compress.evaluate.compare).
"""
from __future__ import annotations

from ..evaluate.compare import (FORMATS, format_table, points_from_systems, read_system,
                                systems_json, wsj_table)
from ..evaluate.plots import wer_vs_params_plot


def add_parser(sub, kaldi_bool) -> None:
    p = sub.add_parser("compare", help="WER table of Kaldi model directories, like "
                       "local/chain/compare_wer.sh",
                       description="Read decode_*/scoring_kaldi/best_wer (or the wer_* files) "
                       "of WSJ decodes in each model directory and print compare_wer.sh's "
                       "table, with parameters, model size and real-time factor.")
    p.add_argument("--format", choices=FORMATS, default="plain",
                   help="output format (default plain, compare_wer.sh's layout)")
    p.add_argument("--plot", metavar="FILE.png", default="",
                   help="also plot WER against parameters (first decode all systems have)")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="model directory (exp/chain/...)")


def run(args) -> int:
    systems = [read_system(d) for d in args.dirs]
    if args.plot:
        points, metric = points_from_systems(systems)
        wer_vs_params_plot(points, args.plot, metric=metric)
    if args.format == "json":
        print(systems_json(systems), end="")
    else:
        title = "# kaldi-compress compare " + " ".join(args.dirs)
        print(format_table(wsj_table(systems, title if args.format == "plain" else ""),
                           args.format), end="")
    return 0
