"""``kaldi-compress fidelity BASE OTHER --model-dir DIR --data DIR``: output agreement.

Computes both networks' outputs on the model directory's features (MFCC and
online i-vectors) of every wav in the data directory and reports the output SNR,
the best-pdf agreement and the KL divergence of the softmaxed outputs.
"""
from __future__ import annotations

import json
import math

from ..nnet3 import read_model
from .shared import add_chunking, add_front_end, add_num_threads


def add_parser(sub, kaldi_bool) -> None:
    p = sub.add_parser("fidelity", help="compare two networks' outputs on speech",
                       description="Compare OTHER's outputs with BASE's on the wavs of a "
                       "data directory: output SNR (dB), best-pdf agreement (%) and KL "
                       "divergence of the softmaxed outputs (nats/frame).")
    add_front_end(p, required=True)
    p.add_argument("--data", required=True, metavar="DIR", help="directory of 16 kHz *.wav")
    add_chunking(p, 50, from_model_dir=True)
    p.add_argument("--json", type=kaldi_bool, default=False, metavar="BOOL",
                   help="print one JSON object instead")
    add_num_threads(p)
    p.add_argument("base", help="reference model (.mdl or .raw)")
    p.add_argument("other", help="model to compare with it")


def run(args) -> int:
    from ..compute.fidelity import fidelity
    from ..compute.threads import prepare_torch

    prepare_torch(args.num_threads)
    result = fidelity(read_model(args.base).nnet, read_model(args.other).nnet,
                      args.model_dir, args.data, args.frames_per_chunk,
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
