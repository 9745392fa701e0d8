"""``kaldi-compress copy [--binary=true|false] [--raw] [--prepare-for-test] IN OUT``."""
from __future__ import annotations

from ..nnet3 import read_model, write_model
from ..nnet3.edit import prepare_for_test
from .shared import add_binary, add_model_io, refuse_overwrite


def add_parser(sub, kaldi_bool) -> None:
    p = sub.add_parser("copy", help="copy/convert a model, like nnet3-am-copy",
                       description="Copy a model, converting between binary and text, "
                       ".mdl and raw, like nnet3-am-copy.")
    add_binary(p, kaldi_bool)
    p.add_argument("--raw", type=kaldi_bool, default=False, metavar="BOOL",
                   help="write only the raw nnet (no transition model or priors)")
    p.add_argument("--prepare-for-test", type=kaldi_bool, default=False, metavar="BOOL",
                   help="drop outputs other than 'output' and what only they use (the xent "
                   "branch), and set batch-norm/dropout test mode")
    add_model_io(p)


def run(args) -> int:
    refuse_overwrite(args)
    model = read_model(args.input)
    if args.prepare_for_test:
        prepare_for_test(model.nnet)
    write_model(model, args.output, binary=args.binary, raw=args.raw)
    return 0
