"""``kaldi-compress prune [options] (--calibration-data DIR --model-dir DIR |
--calibration-feats RSPEC) IN OUT``: structured width pruning (hidden units of the 768-wide
layers and the residual stream)."""
from __future__ import annotations

from .shared import (add_calibration, add_compress_options, add_width_options, common_options,
                     compress_model, finish, width_options)


HELP = "remove hidden units (structured width pruning)"
DESCRIPTION = """\
Remove hidden units of width spaces -- a layer's outputs with their
ReLU/BatchNorm/dropout dims, or a whole TDNN-F residual stream -- greedily, the unit
whose removal leaves the least damage to the next layers' outputs on calibration audio
once the others are refit (Optimal Brain Surgeon); the next layers are refit by least
squares, then (--closed-loop) again in network order on the pruned network's own
inputs. Same Kaldi component types, smaller dims. Give exactly one of --keep-fraction,
--param-ratio, --target-params."""


def add_parser(sub, kaldi_bool) -> None:
    p = sub.add_parser("prune", help=HELP, description=DESCRIPTION)
    p.add_argument("--keep-fraction", type=float, metavar="F",
                   help="keep this share of the units of every width space")
    add_calibration(p, True, "the audio whose activations choose the units and refit")
    add_width_options(p, kaldi_bool)
    add_compress_options(p, kaldi_bool)


def run(args) -> int:
    from ..compress.prune import PruneOptions, prune_compress
    opts = PruneOptions(**common_options(args), **width_options(args),
                        keep_fraction=args.keep_fraction)
    finish(args, *compress_model(args, opts, prune_compress))
    return 0
