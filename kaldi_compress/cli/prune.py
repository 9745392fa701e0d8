"""``kaldi-compress prune [options] --calibration-data DIR --model-dir DIR IN OUT``:
structured width pruning (hidden units of the 768-wide layers and the residual stream)."""
from __future__ import annotations

from ..nnet3 import read_model
from .shared import (add_calibration, add_compress_options, calibration, common_options, finish,
                     refuse_overwrite)


def add_parser(sub, kaldi_bool) -> None:
    p = sub.add_parser(
        "prune", help="remove hidden units (structured width pruning)",
        description="Remove hidden units of width spaces -- a layer's outputs with their "
        "ReLU/BatchNorm/dropout dims, or a whole TDNN-F residual stream -- chosen by their "
        "damage to the next layers' outputs on calibration audio; the next layers are "
        "refit by least squares. Same Kaldi component types, smaller dims. Give exactly one "
        "of --keep-fraction, --param-ratio, --target-params.")
    p.add_argument("--keep-fraction", type=float, metavar="F",
                   help="keep this share of the units of every width space")
    add_calibration(p, True, "the audio whose activations choose the units and refit")
    p.add_argument("--refit", type=kaldi_bool, default=True, metavar="BOOL",
                   help="refit the layers reading a pruned space by least squares (default "
                   "true; false: removed units are replaced by their means)")
    p.add_argument("--min-width", type=int, default=8, metavar="N",
                   help="never prune a space below N units (default 8)")
    add_compress_options(p, kaldi_bool)


def run(args) -> int:
    from ..compress.prune import PruneOptions, prune_compress
    refuse_overwrite(args)
    opts = PruneOptions(**common_options(args), keep_fraction=args.keep_fraction,
                        refit=args.refit, min_width=args.min_width)
    opts.check()
    model = read_model(args.input)
    before = model.nnet.num_parameters
    opts.calibration = calibration(args)
    reports = prune_compress(model.nnet, opts)
    finish(model, args, before, reports)
    return 0
