"""``kaldi-compress finetune --teacher BASE (--model-dir DIR --data DIR | --feats RSPEC) STUDENT OUT``.

Distillation on unlabeled audio: the teacher's outputs on every chunk of the
data are computed once, then the student's updatable parameters are trained to
reproduce them (batch norm and dropout in test mode, as decoding uses them), and
the student is written in Kaldi's format.  A checkpoint OUT.ckpt is kept while
training (after every epoch, every few minutes, and on Ctrl-C); ``--resume``
continues from it, and it is removed once OUT is written.
"""
from __future__ import annotations

import os
import sys
import time

from ..errors import KaldiCompressError
from ..io.files import same_file
from ..nnet3 import read_model, write_model


def add_parser(sub, kaldi_bool) -> None:
    p = sub.add_parser(
        "finetune", help="recover a compressed model's accuracy by distillation on audio",
        description="Train STUDENT (a compressed model) to reproduce the outputs of the "
        "--teacher (the original) on unlabeled audio -- wav directories with --model-dir "
        "and --data, or Kaldi feature tables with --feats -- and write it to OUT.")
    p.add_argument("--teacher", required=True, metavar="MODEL",
                   help="the original model (.mdl or .raw) whose outputs are the targets")
    g = p.add_argument_group("data: wav directories")
    g.add_argument("--model-dir", metavar="DIR",
                   help="Vosk-style model directory (conf/mfcc.conf, ivector/) for features")
    g.add_argument("--data", action="append", default=[], metavar="DIR",
                   help="directory of 16 kHz *.wav (repeat for more)")
    g.add_argument("--dither", type=float, default=None, metavar="F",
                   help="MFCC dither (default: conf/mfcc.conf's, else Kaldi's 1)")
    g = p.add_argument_group("data: Kaldi tables")
    g.add_argument("--feats", metavar="RSPEC",
                   help="feature rspecifier, e.g. scp:data/train/feats.scp")
    g.add_argument("--online-ivectors", default="", metavar="RSPEC",
                   help="online i-vectors as matrices (needs --online-ivector-period)")
    g.add_argument("--online-ivector-period", type=int, default=0, metavar="N")
    g = p.add_argument_group("chunks")
    g.add_argument("--frame-subsampling-factor", type=int, default=0, metavar="N",
                   help="default: conf/model.conf's value with --model-dir, else 1")
    g.add_argument("--frames-per-chunk", type=int, default=51, metavar="N",
                   help="input frames per chunk, as in decoding (default 51)")
    g.add_argument("--frame-shifts", type=kaldi_bool, default=True, metavar="BOOL",
                   help="also train on the frames between the subsampled outputs "
                   "(outputs shifted by 1 .. N-1 frames; default true)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=12, metavar="N")
    g.add_argument("--lr", type=float, default=1e-3, metavar="X", help="peak learning rate")
    g.add_argument("--batch-size", type=int, default=16, metavar="N", help="chunks per step")
    g.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
    g.add_argument("--warmup", type=float, default=0.05, metavar="F",
                   help="fraction of training with a linearly rising learning rate")
    g.add_argument("--final-lr", type=float, default=0.02, metavar="F",
                   help="final learning rate as a fraction of the peak (cosine decay)")
    g.add_argument("--max-grad-norm", type=float, default=1.0, metavar="X",
                   help="clip the gradient's norm (0: no clipping)")
    g.add_argument("--loss", default="mse", choices=("mse", "kl"),
                   help="mse: squared error of the per-frame-centred outputs; kl: KL "
                   "divergence of the softmaxed outputs (default mse)")
    g.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="softmax temperature of --loss=kl")
    g.add_argument("--max-minutes", type=float, default=0.0, metavar="M",
                   help="time budget of the whole run; the schedule is shortened to fit")
    g.add_argument("--seed", type=int, default=0, metavar="N")
    g.add_argument("--resume", type=kaldi_bool, default=False, metavar="BOOL",
                   help="continue from OUT.ckpt")
    g.add_argument("--checkpoint-minutes", type=float, default=5.0, metavar="M",
                   help="also write OUT.ckpt this often (besides every epoch and Ctrl-C)")
    p.add_argument("--num-threads", type=int, default=0, metavar="N",
                   help="torch CPU threads (default: one per core)")
    p.add_argument("--binary", type=kaldi_bool, default=True, metavar="BOOL",
                   help="write binary (default true)")
    p.add_argument("student", help="the compressed model to train (.mdl or .raw)")
    p.add_argument("output", help="where to write the trained student")


def _log(msg: str, bar: bool) -> None:
    if bar:
        from tqdm import tqdm
        tqdm.write(f"kaldi-compress: {msg}", file=sys.stderr)
    else:
        print(f"kaldi-compress: {msg}", file=sys.stderr)


def _check_args(args) -> None:
    for inp in (args.student, args.teacher):
        if args.output == "-" or same_file(inp, args.output):
            raise KaldiCompressError(f"{args.output}: refusing to overwrite an input "
                                     "(OUT must be a new file)")
    if args.feats and (args.model_dir or args.data):
        raise KaldiCompressError("give either --feats or --model-dir with --data, not both")
    if not args.feats and not (args.model_dir and args.data):
        raise KaldiCompressError("no training data: give --model-dir and --data, or --feats")
    if args.online_ivectors and not args.feats:
        raise KaldiCompressError("--online-ivectors goes with --feats")
    if args.frames_per_chunk < 1 or args.frame_subsampling_factor < 0:
        raise KaldiCompressError("--frames-per-chunk must be > 0 and "
                                 "--frame-subsampling-factor >= 0")
    if args.checkpoint_minutes <= 0:
        raise KaldiCompressError("--checkpoint-minutes must be > 0")


def _check_dims(teacher, student) -> None:
    t, s = teacher.node_dims(), student.node_dims()
    for node, what in (("input", "input"), ("ivector", "i-vector"), ("output", "output")):
        if t.get(node) != s.get(node):
            raise KaldiCompressError(f"the student's {what} dimension ({s.get(node)}) differs "
                                     f"from the teacher's ({t.get(node)})")


def run(args) -> int:
    from .compute import prepare_torch   # first: it sets OMP_WAIT_POLICY before torch loads
    from ..compute.forward import NnetForward
    from ..finetune.chunks import make_chunks, network_outputs
    from ..finetune.data import table_corpus, wav_corpus
    from ..finetune.loss import LossOptions
    from ..finetune.train import Trainer, TrainOptions

    started = time.monotonic()
    _check_args(args)
    prepare_torch(args.num_threads)
    ckpt = args.output + ".ckpt"
    if not args.resume and os.path.exists(ckpt):
        raise KaldiCompressError(f"{ckpt} exists (an unfinished run): continue it with "
                                 "--resume, or delete it")
    if args.resume and not os.path.isfile(ckpt):
        raise KaldiCompressError(f"{ckpt}: no checkpoint to resume from")
    loss = LossOptions(kl_weight=1.0, mse_weight=0.0, temperature=args.temperature) \
        if args.loss == "kl" else LossOptions(kl_weight=0.0, mse_weight=1.0)
    opts = TrainOptions(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                        optimizer=args.optimizer, warmup=args.warmup, final_lr=args.final_lr,
                        max_grad_norm=args.max_grad_norm, max_minutes=args.max_minutes,
                        seed=args.seed, loss=loss)
    opts.check()
    teacher = read_model(args.teacher).nnet
    model = read_model(args.student)
    _check_dims(teacher, model.nnet)
    bar = sys.stderr.isatty()
    if args.feats:
        corpus = table_corpus(args.feats, args.online_ivectors, args.online_ivector_period)
    else:
        corpus = wav_corpus(args.model_dir, args.data, args.dither, progress=bar)
    fsf = args.frame_subsampling_factor or corpus.frame_subsampling_factor or 1
    shifts = tuple(range(fsf)) if args.frame_shifts else (0,)
    chunks, computer = make_chunks(corpus, teacher, model.nnet, fsf, args.frames_per_chunk,
                                   shifts)
    chunks.targets = network_outputs(computer.forward, chunks, progress=bar)
    del computer
    _log(f"{len(corpus.utterances)} utterances, {corpus.num_frames} frames -> {len(chunks)} "
         f"chunks, {chunks.num_outputs} training outputs", bar)
    trainer = Trainer(NnetForward(model.nnet), chunks, opts)
    if args.resume:
        trainer.load(ckpt)
        _log(f"resuming {ckpt} at step {trainer.step} of {trainer.total_steps}", bar)
    else:
        _log(f"loss before training: {trainer.evaluate(chunks):.5g}", bar)

    def on_epoch(t: Trainer, stats) -> None:
        _log(f"epoch {stats.epoch}/{opts.epochs}: loss {stats.loss:.5g}, lr {stats.lr:.3g}", bar)

    try:
        trainer.train(ckpt, progress=bar, started=started,
                      checkpoint_minutes=args.checkpoint_minutes, on_epoch=on_epoch)
    except KeyboardInterrupt:
        if os.path.exists(ckpt):
            _log(f"checkpoint {ckpt} at step {trainer.step}; continue with --resume", False)
        raise
    trainer.student.write_back()
    write_model(model, args.output, binary=args.binary)
    _log(f"wrote {args.output} after {trainer.step} steps, {trainer.elapsed / 60:.1f} min", bar)
    if os.path.exists(ckpt):
        os.unlink(ckpt)
    return 0
