"""``kaldi-compress fidelity BASE OTHER (--model-dir DIR --data DIR | --feats RSPEC)``.

Computes both networks' outputs on the same features -- the model directory's front end
(MFCC and online i-vectors) on every wav of a data directory, or a Kaldi feature table
with its online i-vectors, as nnet3-compute reads them -- and reports the output SNR,
the best-pdf agreement and the KL divergence of the softmaxed outputs.
"""
from __future__ import annotations

import json
import math

from ..errors import KaldiCompressError
from ..nnet3 import read_model
from .shared import add_chunking, add_front_end, add_num_threads


def add_parser(sub, kaldi_bool) -> None:
    p = sub.add_parser("fidelity", help="compare two networks' outputs on speech",
                       description="Compare OTHER's outputs with BASE's on the wavs of a "
                       "data directory or on a Kaldi feature table: output SNR (dB), best-pdf "
                       "agreement (%) and KL divergence of the softmaxed outputs (nats/frame).")
    g = p.add_argument_group("data: wav directory")
    add_front_end(g)
    g.add_argument("--data", metavar="DIR", help="directory of 16 kHz *.wav (needs --model-dir)")
    g = p.add_argument_group("data: Kaldi tables")
    g.add_argument("--feats", metavar="RSPEC", help="instead of --data: a feature table, e.g. "
                   "scp:data/test_hires/feats.scp or 'ark:apply-cmvn-online ... |'")
    g.add_argument("--online-ivectors", default="", metavar="RSPEC",
                   help="online i-vectors as matrices (needs --online-ivector-period)")
    g.add_argument("--online-ivector-period", type=int, default=0, metavar="N",
                   help="frames between rows of the --online-ivectors matrices")
    g.add_argument("--max-utts", type=int, default=0, metavar="N",
                   help="compare the first N usable utterances of --feats (default 0: all)")
    add_chunking(p, 50, from_model_dir=True)
    p.add_argument("--json", type=kaldi_bool, default=False, metavar="BOOL",
                   help="print one JSON object instead")
    add_num_threads(p)
    p.add_argument("base", help="reference model (.mdl or .raw)")
    p.add_argument("other", help="model to compare with it")


def run(args) -> int:
    from ..compute.fidelity import fidelity, fidelity_tables
    from ..compute.threads import prepare_torch

    wavs = [f"--{o}" for o, v in (("model-dir", args.model_dir), ("data", args.data),
                                  ("dither", args.dither is not None)) if v]
    tables = [f"--{o}" for o, v in (("online-ivectors", args.online_ivectors),
                                    ("online-ivector-period", args.online_ivector_period),
                                    ("max-utts", args.max_utts)) if v]
    if args.feats and wavs:
        raise KaldiCompressError(f"give --feats or --model-dir with --data, not {wavs[0]} too")
    if not args.feats:
        if tables:
            raise KaldiCompressError(f"{tables[0]} needs --feats")
        if not (args.model_dir and args.data):
            raise KaldiCompressError("fidelity needs --model-dir DIR and --data DIR, or "
                                     "--feats RSPEC")
    prepare_torch(args.num_threads)
    base, other = read_model(args.base).nnet, read_model(args.other).nnet
    if args.feats:
        result = fidelity_tables(base, other, args.feats, args.online_ivectors,
                                 args.online_ivector_period, args.frames_per_chunk,
                                 args.frame_subsampling_factor or 1, args.max_utts)
    else:
        result = fidelity(base, other, args.model_dir, args.data, args.frames_per_chunk,
                          args.frame_subsampling_factor or None, args.dither)
    if args.json:
        d = result.as_dict()
        d["snr_db"] = None if math.isinf(d["snr_db"]) else d["snr_db"]
        print(json.dumps(d, indent=1))
    else:
        print(f"utterances: {result.utterances}\nframes: {result.frames}\n"
              f"snr-db: {result.snr_db:.2f}\nbest-pdf-agreement: {result.agreement:.2f}%\n"
              f"kl-divergence: {result.kl:.6g}")
    return 0
