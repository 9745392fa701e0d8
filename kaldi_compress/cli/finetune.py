"""``kaldi-compress finetune --teacher BASE (--model-dir DIR --data DIR | --feats RSPEC) STUDENT OUT``.

Distillation on unlabeled audio (:mod:`kaldi_compress.finetune.distill`): the
student learns the teacher's outputs and is written in Kaldi's format; OUT.ckpt is
kept while training and ``--resume`` continues from it.  Wav data may be speed- and
volume-perturbed as Kaldi recipes do; ``--valid-data`` picks the best epoch.
``--device`` picks CPU or CUDA; under ``torchrun --nproc-per-node=N`` the N
processes train data-parallel and rank 0 writes; a large ``--feats`` table streams.
``--pack-bits=B`` trains through the codebooks of ``pack --bits=B`` and writes weights
on them (:mod:`kaldi_compress.finetune.qat`).
"""
from __future__ import annotations

import sys

from ..finetune.distill import FinetuneJob, default_train_options, finetune
from ..finetune.augment import parse_speeds
from ..finetune.options import (DEFAULT_SHUFFLE_BUFFER, LossOptions, TrainOptions,
                                parse_pack_bits)
from .shared import add_binary, add_chunking, add_front_end, add_num_threads

_T = default_train_options()


def add_parser(sub, kaldi_bool) -> None:
    p = sub.add_parser(
        "finetune", help="recover a compressed model's accuracy by distillation on audio",
        description="Train STUDENT (a compressed model) to reproduce the outputs of the "
        "--teacher (the original) on unlabeled audio -- wav directories with --model-dir "
        "and --data, or Kaldi feature tables with --feats -- and write it to OUT.")
    p.add_argument("--teacher", required=True, metavar="MODEL",
                   help="the original model (.mdl or .raw) whose outputs are the targets")
    g = p.add_argument_group("data: wav directories")
    add_front_end(g)
    g.add_argument("--data", action="append", default=[], metavar="DIR",
                   help="directory of 16 kHz *.wav (repeat for more)")
    g.add_argument("--valid-data", action="append", default=[], metavar="DIR",
                   help="directory of 16 kHz *.wav, not training audio (repeat for more): "
                   "the loss on it is logged every epoch and the student with the lowest "
                   "one is written")
    g.add_argument("--speed-perturb", default="1.0", metavar="F,F,...",
                   help="train on a copy of every --data wav per speed factor, as Kaldi's "
                   "perturb_data_dir_speed_3way.sh with 0.9,1.0,1.1 (default 1.0: none)")
    g.add_argument("--volume-perturb", type=kaldi_bool, default=False, metavar="BOOL",
                   help="scale every copy by a random gain in [0.125, 2], as Kaldi's "
                   "perturb_data_dir_volume.sh (seeded by --seed; default false)")
    g = p.add_argument_group("data: Kaldi tables")
    g.add_argument("--feats", metavar="RSPEC",
                   help="feature rspecifier, e.g. scp:data/train/feats.scp")
    g.add_argument("--online-ivectors", default="", metavar="RSPEC",
                   help="online i-vectors as matrices (needs --online-ivector-period)")
    g.add_argument("--online-ivector-period", type=int, default=0, metavar="N")
    g.add_argument("--shuffle-buffer", type=int, default=DEFAULT_SHUFFLE_BUFFER, metavar="N",
                   help="a table of more chunks than N is streamed: read as training goes "
                   "(teacher targets per batch) through a shuffle buffer of N chunks, as "
                   "nnet3-shuffle-egs --buffer-size; a smaller one is held and shuffled "
                   f"whole (default {DEFAULT_SHUFFLE_BUFFER})")
    g = p.add_argument_group("chunks")
    add_chunking(g, 51, from_model_dir=True)
    g.add_argument("--frame-shifts", type=kaldi_bool, default=True, metavar="BOOL",
                   help="also train on the frames between the subsampled outputs "
                   "(outputs shifted by 1 .. N-1 frames; default true)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=_T.epochs, metavar="N")
    g.add_argument("--lr", type=float, default=_T.lr, metavar="X", help="peak learning rate")
    g.add_argument("--batch-size", type=int, default=_T.batch_size, metavar="N",
                   help="chunks per step and process (under torchrun the global batch is "
                   "N times the number of processes)")
    g.add_argument("--optimizer", default=_T.optimizer, choices=("adam", "sgd"))
    g.add_argument("--warmup", type=float, default=_T.warmup, metavar="F",
                   help="fraction of training with a linearly rising learning rate")
    g.add_argument("--final-lr", type=float, default=_T.final_lr, metavar="F",
                   help="final learning rate as a fraction of the peak (cosine decay)")
    g.add_argument("--max-grad-norm", type=float, default=_T.max_grad_norm, metavar="X",
                   help="clip the gradient's norm (0: no clipping)")
    g.add_argument("--loss", default="mse", choices=("mse", "kl"),
                   help="mse: squared error of the per-frame-centred outputs; kl: KL "
                   "divergence of the softmaxed outputs (default mse)")
    g.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="softmax temperature of --loss=kl")
    g.add_argument("--max-minutes", type=float, default=0.0, metavar="M",
                   help="time budget of training, counted once the teacher targets are ready; "
                   "the schedule is shortened to fit")
    g.add_argument("--early-stop-patience", type=int, default=_T.early_stop_patience,
                   metavar="N", help="with --valid-data, stop after N epochs without a lower "
                   "validation loss (default 0: train all epochs, still keep the best)")
    g.add_argument("--reject-worse", type=kaldi_bool, default=_T.reject_worse,
                   metavar="BOOL", help="with --valid-data, undo an epoch that does not lower "
                   "the validation loss and halve the learning rate from then on (Kaldi "
                   "nnet1's newbob rule; default true)")
    g.add_argument("--valid-checks", type=int, default=_T.valid_checks, metavar="K",
                   help="with --reject-worse, until an epoch is kept: measure the validation "
                   "loss K times within each epoch and abandon the epoch (undone, rate "
                   "halved, started again) at a check that finds twice the untrained "
                   "student's or more; "
                   "0: only at epoch ends (default %(default)s)")
    g.add_argument("--pack-bits", default=None, metavar="B",
                   help="quantization-aware: train through the codebooks of at most 2^B "
                   "values per weight matrix that 'kaldi-compress pack --bits=B' uses "
                   "(refit every epoch, straight-through gradients) and write weights on "
                   "them, so the pack is lossless; B in 1..8 (default: off)")
    g.add_argument("--seed", type=int, default=0, metavar="N",
                   help="of the shuffles and the volume gains")
    g.add_argument("--resume", type=kaldi_bool, default=False, metavar="BOOL",
                   help="continue from OUT.ckpt")
    g.add_argument("--checkpoint-minutes", type=float, default=5.0, metavar="M",
                   help="also write OUT.ckpt this often (besides every epoch, Ctrl-C "
                   "and SIGTERM)")
    add_num_threads(p)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to train: auto is cuda when torch sees a GPU, else cpu "
                   "(float32 either way; under torchrun, process i uses GPU i of its node)")
    add_binary(p, kaldi_bool)
    p.add_argument("student", help="the compressed model to train (.mdl or .raw)")
    p.add_argument("output", help="where to write the trained student")


def run(args) -> int:
    loss = LossOptions(kl_weight=1.0, mse_weight=0.0, temperature=args.temperature) \
        if args.loss == "kl" else LossOptions(kl_weight=0.0, mse_weight=1.0)
    train = TrainOptions(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                         optimizer=args.optimizer, warmup=args.warmup, final_lr=args.final_lr,
                         max_grad_norm=args.max_grad_norm, max_minutes=args.max_minutes,
                         seed=args.seed, early_stop_patience=args.early_stop_patience,
                         reject_worse=args.reject_worse, valid_checks=args.valid_checks,
                         pack_bits=parse_pack_bits(args.pack_bits), loss=loss)
    finetune(FinetuneJob(
        args.teacher, args.student, args.output, model_dir=args.model_dir, data=args.data,
        valid_data=args.valid_data, speed_perturb=parse_speeds(args.speed_perturb),
        volume_perturb=args.volume_perturb,
        dither=args.dither, feats=args.feats, online_ivectors=args.online_ivectors,
        online_ivector_period=args.online_ivector_period,
        frame_subsampling_factor=args.frame_subsampling_factor,
        frames_per_chunk=args.frames_per_chunk, frame_shifts=args.frame_shifts, train=train,
        resume=args.resume, checkpoint_minutes=args.checkpoint_minutes,
        num_threads=args.num_threads, device=args.device, shuffle_buffer=args.shuffle_buffer,
        binary=args.binary, progress=sys.stderr.isatty()))
    return 0
