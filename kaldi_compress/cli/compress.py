"""``kaldi-compress compress --param-ratio=R [--methods=svd,prune,tt] (--calibration-data DIR
--model-dir DIR | --calibration-feats RSPEC) IN OUT``: widths, ranks and TT under one parameter
budget."""
from __future__ import annotations

import json
import sys

from ..io.files import write_output
from .shared import (add_calibration, add_compress_options, add_width_options, common_options,
                     compress_model, finish, width_options)


HELP = "prune widths and factorize layers under one parameter budget"
DESCRIPTION = """\
Choose hidden-unit widths (structured pruning), SVD ranks and, with --methods=...,tt,
tensor-train layers under one budget (--param-ratio or --target-params) by their
measured damage to the network output on calibration audio; the widths are applied
first, then the ranks meet the budget exactly."""


def add_parser(sub, kaldi_bool) -> None:
    p = sub.add_parser("compress", help=HELP, description=DESCRIPTION)
    p.add_argument("--methods", default="svd,prune", metavar="LIST",
                   help="comma-separated, of svd, prune, tt (default svd,prune)")
    add_calibration(p, True, "the audio that prices the choices and refits the layers")
    add_width_options(p, kaldi_bool)
    add_compress_options(p, kaldi_bool)


def run(args) -> int:
    from ..compress.joint import JointOptions, joint_compress
    from ..compress.spine import format_report, report_dict
    opts = JointOptions(**common_options(args), **width_options(args),
                        methods=tuple(args.methods.split(",")))
    model, before, stages = compress_model(args, opts, joint_compress)
    for stage in stages:
        print(f"kaldi-compress: {stage.name}", file=sys.stderr)
        print(format_report(stage.reports), file=sys.stderr, end="")
    finish(args, model, before, None)
    if args.report:
        after = model.nnet.num_parameters
        doc = {"params_before": before, "params_after": after,
               "stages": [{"stage": s.name, **report_dict(before, after, s.reports)}
                          for s in stages]}
        write_output(args.report, [json.dumps(doc, indent=1).encode()])
    return 0
