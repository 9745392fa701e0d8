"""``kaldi-compress svd [options] IN OUT``: SVD bottlenecks, Kaldi-compatible or beyond."""
from __future__ import annotations

import sys

from ..errors import KaldiCompressError
from ..nnet3 import read_model
from .shared import (add_calibration, add_compress_options, common_options, compress_model, finish,
                     refuse_overwrite)


def add_parser(sub, kaldi_bool) -> None:
    p = sub.add_parser(
        "svd", help="replace affine/TDNN/TDNN-F layers by SVD bottlenecks",
        description="Factorize layers by truncated SVD and write a Kaldi model. Give exactly "
        "one rank rule: --bottleneck-dim, --energy-threshold, --param-ratio or --target-params.")
    p.add_argument("--bottleneck-dim", type=int, metavar="N", help="rank of every layer")
    p.add_argument("--energy-threshold", type=float, metavar="E",
                   help="per layer, the smallest rank keeping fraction E of sum s_i^2")
    p.add_argument("--kaldi-compatible", type=kaldi_bool, default=False, metavar="BOOL",
                   help="exactly Kaldi's apply-svd: Affine/NaturalGradientAffine only, "
                   "<name>_a Linear + <name>_b NaturalGradientAffine")
    add_calibration(p, False, "data-aware truncation")
    p.add_argument("--closed-loop", type=kaldi_bool, default=True, metavar="BOOL",
                   help="data-aware: refit each layer on the inputs of the already "
                   "compressed layers below it (default true)")
    add_compress_options(p, kaldi_bool, "leave a layer alone if its weights would shrink to "
                         "more than S of their size (default 1.0: only factorize when it "
                         "saves parameters)")


def run(args) -> int:
    from ..compress.svd import SvdOptions, svd_compress
    if args.kaldi_compatible:
        return _run_kaldi(args)
    opts = SvdOptions(**common_options(args), bottleneck_dim=args.bottleneck_dim,
                      energy_threshold=args.energy_threshold, closed_loop=args.closed_loop)
    finish(args, *compress_model(args, opts, svd_compress))
    return 0


def _run_kaldi(args) -> int:
    """``--kaldi-compatible``: Kaldi's apply-svd, with its log lines."""
    from ..compress.kaldi_svd import apply_svd_kaldi
    if args.param_ratio is not None or args.target_params is not None or args.calibration_data \
            or args.calibration_feats:
        raise KaldiCompressError("--kaldi-compatible takes only --bottleneck-dim or "
                                 "--energy-threshold (and --shrinkage-threshold)")
    refuse_overwrite(args)
    model = read_model(args.input)
    before = model.nnet.num_parameters
    if not model.nnet.find_components(args.components):
        raise KaldiCompressError(f"--components={args.components} matches no component")
    records = apply_svd_kaldi(model.nnet, args.components,
                              args.bottleneck_dim if args.bottleneck_dim else -1,
                              args.energy_threshold if args.energy_threshold else -1.0,
                              args.shrinkage_threshold)
    for r in records:
        if r.rank is None:
            print(f"kaldi-compress: not decomposing {r.component}: {r.note}", file=sys.stderr)
        else:
            print(f"kaldi-compress: {r.component} ({r.input_dim},{r.output_dim}) -> rank "
                  f"{r.rank}, singular value squared sum {r.energy_before:.6g} -> "
                  f"{r.energy_after:.6g}, shrinkage ratio {r.shrinkage:.6g}", file=sys.stderr)
    finish(args, model, before, None)
    return 0
