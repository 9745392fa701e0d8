"""``kaldi-compress pack [--bits=B] [--prune-threshold=T] IN OUT.kcz`` and
``kaldi-compress unpack IN.kcz OUT.mdl``: weight sharing + entropy coding for shipping."""
from __future__ import annotations

import json
import sys
from types import SimpleNamespace

from ..io.files import display_name, read_input, write_output
from ..nnet3 import read_model
from .shared import add_calibration, add_model_io, calibration, refuse_overwrite


def add_parser(sub, kaldi_bool) -> None:
    p = sub.add_parser(
        "pack", help="pack a model into a small .kcz file (codebooks + entropy coding)",
        description="Replace each trained weight matrix by a codebook of at most 2^B values "
        "(1-D k-means) and one index per weight, entropy-coded with zstandard; everything "
        "else (transition model, config, biases, statistics, the LDA) is stored exactly. "
        "'kaldi-compress unpack' gives back a Kaldi model whose weights are the codebook "
        "values. A per-layer table goes to stderr.")
    p.add_argument("--bits", type=int, default=8, metavar="B",
                   help="codebook of at most 2^B values per matrix, B in 1..8 (default 8)")
    p.add_argument("--prune-threshold", type=float, default=0.0, metavar="T",
                   help="weights with |w| < T become exactly 0, a codebook value of its own "
                   "(default 0: no pruning)")
    p.add_argument("--report", metavar="FILE", help="also write the table as JSON")
    add_calibration(p, required=False, shrinkage=False,
                    what="audio for data-aware rounding (each weight matrix's rounding error "
                    "fed forward onto the weights not yet rounded, under the statistics of its "
                    "inputs on this audio; same codebooks and size)")
    add_model_io(p)


def run(args) -> int:
    from ..pack import pack_model
    refuse_overwrite(args)
    model = read_model(args.input)
    moments = None
    cal = calibration(args)
    if cal is not None:
        from ..pack.rounding import input_moments
        from ..pack.skeleton import weight_matrices
        moments = input_moments(model.nnet, cal,
                                {name for name, _, _ in weight_matrices(model.nnet)})
    data, report = pack_model(model, args.bits, args.prune_threshold, moments=moments)
    print(report.format_table(), file=sys.stderr, end="")
    write_output(args.output, [data])
    if args.report:
        write_output(args.report, [json.dumps(report.to_dict(), indent=1).encode()])
    return 0


def add_unpack_parser(sub, kaldi_bool) -> None:
    p = sub.add_parser(
        "unpack", help="write the Kaldi model held by a .kcz pack",
        description="Write the Kaldi binary model held by a pack (byte-identical on every "
        "unpack); Kaldi and Vosk load it as any other model.")
    add_model_io(p)


def run_unpack(args) -> int:
    from ..pack import unpack_model
    refuse_overwrite(args)
    write_output(args.output, [unpack_model(read_input(args.input), display_name(args.input))])
    return 0


# ``unpack`` is registered as a command of its own (cli/__init__.COMMANDS).
UNPACK = SimpleNamespace(add_parser=add_unpack_parser, run=run_unpack)
