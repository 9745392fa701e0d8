"""``kaldi-compress compute [options] MODEL FEATS_RSPEC OUT_WSPEC``: like nnet3-compute.

Runs the network's 'output' over every utterance of a feature table, in chunks
exactly as nnet3-compute does, and writes one output matrix per utterance.
"""
from __future__ import annotations

import gc
import warnings

import numpy as np

from ..errors import KaldiCompressError
from ..nnet3 import read_model
from .shared import add_chunking, add_num_threads


def add_parser(sub, kaldi_bool) -> None:
    p = sub.add_parser("compute", help="propagate features through the network (nnet3-compute)",
                       description="Propagate features through the network and write its "
                       "output, with nnet3-compute's chunking, context and i-vector rules.")
    p.add_argument("--online-ivectors", default="", metavar="RSPEC",
                   help="i-vectors estimated online, as matrices (needs --online-ivector-period)")
    p.add_argument("--online-ivector-period", type=int, default=0, metavar="N",
                   help="frames between rows of the --online-ivectors matrices")
    add_chunking(p, 50, from_model_dir=False)
    p.add_argument("--extra-left-context", type=int, default=0, metavar="N")
    p.add_argument("--extra-right-context", type=int, default=0, metavar="N")
    p.add_argument("--extra-left-context-initial", type=int, default=-1, metavar="N",
                   help="if >= 0, replaces --extra-left-context for the first chunk")
    p.add_argument("--extra-right-context-final", type=int, default=-1, metavar="N",
                   help="if >= 0, replaces --extra-right-context for the last chunk")
    p.add_argument("--apply-exp", type=kaldi_bool, default=False, metavar="BOOL",
                   help="apply exp() to the output")
    p.add_argument("--use-priors", type=kaldi_bool, default=False, metavar="BOOL",
                   help="subtract the log-priors stored in the .mdl")
    add_num_threads(p)
    p.add_argument("model", help="raw nnet or acoustic model (.raw or .mdl)")
    p.add_argument("features", help="feature rspecifier, e.g. ark:feats.ark or scp:feats.scp")
    p.add_argument("output", help="output wspecifier, e.g. ark:out.ark or ark,t:out.txt")


def run(args) -> int:
    from ..compute.threads import prepare_torch
    from ..compute.chunking import ComputeOptions, SimpleComputer
    from ..io.tables import MatrixWriter, ivector_reader, read_matrices

    prepare_torch(args.num_threads)
    model = read_model(args.model)
    log_priors = None
    if args.use_priors:
        if not model.is_am or model.priors is None or model.priors.size == 0:
            raise KaldiCompressError(f"{args.model}: --use-priors needs an acoustic model "
                                     "with priors")
        log_priors = np.log(model.priors.astype(np.float32))
    opts = ComputeOptions(args.frame_subsampling_factor, args.frames_per_chunk,
                          args.extra_left_context, args.extra_right_context,
                          args.extra_left_context_initial, args.extra_right_context_final,
                          args.online_ivector_period)
    computer = SimpleComputer(model.nnet, opts)
    ivectors = ivector_reader(args.online_ivectors, args.online_ivector_period)
    gc.freeze()   # torch's many long-lived objects make full collections slow
    done = failed = 0
    with MatrixWriter(args.output) as writer:
        for key, feats in read_matrices(args.features):
            if len(feats) == 0:
                warnings.warn(f"zero-length utterance: {key}")
                failed += 1
                continue
            ivec = None
            if ivectors is not None:
                if key not in ivectors:
                    warnings.warn(f"no online i-vector available for utterance {key}")
                    failed += 1
                    continue
                ivec = ivectors[key]
            out = computer.compute(feats, ivec)
            if log_priors is not None:
                out = out - log_priors
            writer.write(key, np.exp(out) if args.apply_exp else out)
            done += 1
    if done == 0:
        raise KaldiCompressError(f"no utterances computed ({failed} failed)")
    return 0
