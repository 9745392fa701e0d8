"""``kaldi-compress tt [options] IN OUT``: tensor-train layers written as Kaldi components."""
from __future__ import annotations

import os

from ..errors import KaldiCompressError
from .shared import add_calibration, add_compress_options, common_options, compress_model, finish


HELP = "replace affine/TDNN layers by tensor-train (TT) factorizations"
DESCRIPTION = """\
Factorize layers as TT-matrices (TT-SVD) written with Kaldi's own components (Permute +
RepeatedAffine per core), so Kaldi never rebuilds the dense matrix. Give exactly one
rule: --tt-rank, --tt-eps, --param-ratio or --target-params. With a budget each layer
gets TT, SVD or stays as it is, whichever loses least. With --calibration-data, each TT
layer's cores are fitted to its outputs on that audio (Kronecker-whitened TT-SVD)."""


def add_parser(sub, kaldi_bool) -> None:
    p = sub.add_parser("tt", help=HELP, description=DESCRIPTION)
    p.add_argument("--tt-rank", type=int, metavar="R", help="maximum TT rank of every layer")
    p.add_argument("--tt-eps", type=float, metavar="E",
                   help="per layer, relative Frobenius error at most E (TT-SVD: each of the "
                   "d-1 unfoldings truncated at E/sqrt(d-1) ||W||)")
    p.add_argument("--tt-shape", metavar="M1xM2..,N1xN2..",
                   help="force the factorization of the output and input dims, e.g. 24x32,8x8 "
                   "(output dims may be padded up; default: chosen per layer)")
    p.add_argument("--tt-cores", default="2,3", metavar="D1,D2",
                   help="numbers of cores to try when choosing shapes (default 2,3)")
    p.add_argument("--allow-svd", type=kaldi_bool, default=True, metavar="BOOL",
                   help="with a budget, a layer may be factorized by SVD instead (default true)")
    add_calibration(p, False, "data-aware TT cores (fitted to each layer's outputs)")
    add_compress_options(p, kaldi_bool, "with --tt-rank/--tt-eps, leave a layer alone if its "
                         "TT would keep more than S of its parameters (default 1.0: only "
                         "when it saves parameters)")


def run(args) -> int:
    from ..compress.tt import TTShape
    from ..compress.tt_compress import TtOptions, tt_compress
    try:
        cores = tuple(int(v) for v in args.tt_cores.split(","))
    except ValueError:
        raise KaldiCompressError(f"--tt-cores={args.tt_cores}: expected numbers like 2,3") from None
    opts = TtOptions(**common_options(args), tt_rank=args.tt_rank, tt_eps=args.tt_eps,
                     tt_shape=TTShape.parse(args.tt_shape) if args.tt_shape else None,
                     tt_cores=cores, allow_svd=args.allow_svd)
    # TT-SVD's matrices are small: spinning BLAS threads on a busy machine make them up to
    # 100x slower, and one thread loses little (unless the user set OPENBLAS_NUM_THREADS).
    from threadpoolctl import threadpool_limits
    with threadpool_limits(None if "OPENBLAS_NUM_THREADS" in os.environ else 1, "blas"):
        finish(args, *compress_model(args, opts, tt_compress))
    return 0
