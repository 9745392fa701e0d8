"""One distillation run, file to file: the library entry point behind
``kaldi-compress finetune`` (recipes call :func:`finetune` directly).

The teacher's outputs on every chunk of the data are computed once, then the
student's updatable parameters are trained to reproduce them (batch norm and
dropout in test mode, as decoding uses them), and the student is written in
Kaldi's format.  Wav data can be augmented with Kaldi's speed and volume
perturbation (:mod:`.augment`; the targets are the teacher's outputs on the
perturbed audio).  With validation wavs (other audio, never training audio), the
student written is the one with the lowest validation loss, measured before
training and after every epoch with the training loss (:class:`.train.Trainer`).

A checkpoint ``OUTPUT.ckpt`` is kept while training (after every epoch, every
``checkpoint_minutes`` and on Ctrl-C); ``resume`` continues from it, and it is
removed once OUTPUT is written.

Scale: ``device`` picks CPU or CUDA (:mod:`.device`); under ``torchrun`` every
process trains on its share of each step and rank 0 alone logs and writes
(:mod:`.parallel`); a feature table of more than ``shuffle_buffer`` chunks is
streamed, never held in memory (:mod:`.stream`), while a smaller one is held and
shuffled whole, as wav data is.

A TT layer (a ``tt`` rewrite's Permute/RepeatedAffine chain) is trained through its cores
with one dense product per frame, its matrix rebuilt from the cores every step
(:mod:`.tt_dense`); it is written back as the same chain.

With ``train.pack_bits`` B (``--pack-bits``, :mod:`.qat`), the student is trained
through the B-bit codebooks ``pack --bits=B`` would give its weight matrices and
written with its weights on them, so that packing it loses nothing.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import KaldiCompressError
from ..io.files import same_file
from ..nnet3 import Nnet, read_model, write_model
from .augment import Perturbation
from .data import Corpus, check_disjoint
from .options import DEFAULT_SHUFFLE_BUFFER, LossOptions, TrainOptions

if TYPE_CHECKING:
    import torch

    from .chunks import Chunker, ChunkSet
    from .train import EpochStats, Trainer


def default_train_options() -> TrainOptions:
    """The schedule ``kaldi-compress finetune`` uses unless told otherwise: 12 epochs of
    16 chunks per step, gradients clipped at norm 1, epochs that do not lower the
    validation loss undone (with the learning rate halved; until one is kept, also
    abandoned at any of 8 checks within it that finds twice the untrained student's
    validation loss), squared error of centred outputs."""
    return TrainOptions(epochs=12, batch_size=16, max_grad_norm=1.0, reject_worse=True,
                        valid_checks=8, loss=LossOptions(kl_weight=0.0, mse_weight=1.0))


@dataclass
class FinetuneJob:
    """What one run needs: models, data (wav dirs with a model dir, or Kaldi tables),
    chunking, the training schedule and the run's bookkeeping."""
    teacher: str                          # the original model: its outputs are the targets
    student: str                          # the compressed model to train
    output: str                           # where the trained student goes (a new file)
    model_dir: str | None = None          # wav data: Vosk-style dir (conf/, ivector/) ...
    data: list[str] = field(default_factory=list)   # ... and directories of 16 kHz wavs
    valid_data: list[str] = field(default_factory=list)   # wav dirs to pick the best epoch
    speed_perturb: tuple[float, ...] = (1.0,)   # a copy of the training wavs per factor
    volume_perturb: bool = False          # a random gain per copy (seeded by train.seed)
    dither: float | None = None           # MFCC dither (None: conf/mfcc.conf's)
    feats: str | None = None              # table data: feature rspecifier ...
    online_ivectors: str = ""             # ... and online i-vectors as matrices
    online_ivector_period: int = 0
    frame_subsampling_factor: int = 0     # 0: conf/model.conf's with model_dir, else 1
    frames_per_chunk: int = 51            # input frames per chunk, as in decoding
    frame_shifts: bool = True             # also train on the frames between outputs
    train: TrainOptions = field(default_factory=default_train_options)
    resume: bool = False                  # continue from OUTPUT.ckpt
    checkpoint_minutes: float = 5.0
    num_threads: int = 0                  # torch CPU threads (0: torch's default)
    device: str = "auto"                  # auto (CUDA if available), cpu or cuda
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER   # chunks; larger tables are streamed
    binary: bool = True
    progress: bool = False                # tqdm bars and log lines above them

    @property
    def checkpoint(self) -> str:
        return self.output + ".ckpt"

    @property
    def perturbation(self) -> Perturbation:
        return Perturbation(tuple(self.speed_perturb), self.volume_perturb, self.train.seed)

    def check(self) -> None:
        for inp in (self.student, self.teacher):
            if self.output == "-" or same_file(inp, self.output):
                raise KaldiCompressError(f"{self.output}: refusing to overwrite an input "
                                         "(OUT must be a new file)")
        if self.feats and (self.model_dir or self.data):
            raise KaldiCompressError("give either --feats or --model-dir with --data, not both")
        if not self.feats and not (self.model_dir and self.data):
            raise KaldiCompressError("no training data: give --model-dir and --data, or --feats")
        if self.online_ivectors and not self.feats:
            raise KaldiCompressError("--online-ivectors goes with --feats")
        if self.valid_data and not self.model_dir:
            raise KaldiCompressError("--valid-data (wav directories) needs --model-dir and --data")
        self.perturbation.check()
        if self.feats and not self.perturbation.identity:
            raise KaldiCompressError("--speed-perturb and --volume-perturb need wav data "
                                     "(--model-dir and --data)")
        if self.frames_per_chunk < 1 or self.frame_subsampling_factor < 0:
            raise KaldiCompressError("--frames-per-chunk must be > 0 and "
                                     "--frame-subsampling-factor >= 0")
        if self.checkpoint_minutes <= 0:
            raise KaldiCompressError("--checkpoint-minutes must be > 0")
        if self.shuffle_buffer < 1:
            raise KaldiCompressError("--shuffle-buffer must be >= 1")
        if not self.resume and os.path.exists(self.checkpoint):
            raise KaldiCompressError(f"{self.checkpoint} exists (an unfinished run): continue "
                                     "it with --resume, or delete it")
        if self.resume and not os.path.isfile(self.checkpoint):
            raise KaldiCompressError(f"{self.checkpoint}: no checkpoint to resume from")
        self.train.check()
        if self.valid_data:
            check_disjoint(self.data, self.valid_data)


def log(msg: str, bar: bool | None) -> None:
    """A line on stderr that does not break a tqdm bar (None: say nothing, as every
    process but rank 0 does)."""
    if bar is None:
        return
    if bar:
        from tqdm import tqdm
        tqdm.write(f"kaldi-compress: {msg}", file=sys.stderr)
    else:
        print(f"kaldi-compress: {msg}", file=sys.stderr)


def check_dims(teacher: Nnet, student: Nnet) -> None:
    """The student must read and write what the teacher does."""
    t, s = teacher.node_dims(), student.node_dims()
    for node, what in (("input", "input"), ("ivector", "i-vector"), ("output", "output")):
        if t.get(node) != s.get(node):
            raise KaldiCompressError(f"the student's {what} dimension ({s.get(node)}) differs "
                                     f"from the teacher's ({t.get(node)})")


def chunker(teacher: Nnet, student: Nnet, fsf: int, job: FinetuneJob, ivector_period: int,
            device: torch.device) -> Chunker:
    """How the job cuts chunks (frame shifts 0 .. fsf-1 with ``job.frame_shifts``), the
    teacher's forward pass on ``device``."""
    from .chunks import Chunker
    from .device import place

    shifts = tuple(range(fsf)) if job.frame_shifts else (0,)
    cut = Chunker(teacher, student, fsf, job.frames_per_chunk, shifts, ivector_period)
    place(cut.computer.forward, device)
    return cut


def teacher_chunks(corpus: Corpus, cut: Chunker, job: FinetuneJob, what: str,
                   bar: bool | None, device: torch.device) -> ChunkSet:
    """The chunks of a corpus with the teacher's outputs as targets."""
    from .chunks import network_outputs

    chunks = cut.cut(corpus.utterances)
    chunks.targets = network_outputs(cut.computer.forward, chunks, progress=bool(bar),
                                     desc=what, device=device)
    log(f"{what}: {len(corpus.utterances)} utterances, {corpus.num_frames} frames -> "
        f"{len(chunks)} chunks, {chunks.num_outputs} outputs", bar)
    return chunks


def table_chunks(job: FinetuneJob, teacher: Nnet, student: Nnet, bar: bool | None,
                 device: torch.device):
    """The chunks of ``job.feats``: held in memory with their targets if there are at
    most ``job.shuffle_buffer`` of them, else a :class:`.stream.ChunkStream`."""
    from .data import table_corpus
    from .stream import ChunkStream

    fsf = job.frame_subsampling_factor or 1
    period = job.online_ivector_period if job.online_ivectors else 0
    cut = chunker(teacher, student, fsf, job, period, device)
    stream = ChunkStream(job.feats, cut, cut.computer.forward, job.online_ivectors,
                         job.online_ivector_period, job.shuffle_buffer, job.train.seed, device)
    if len(stream) <= job.shuffle_buffer:
        corpus = table_corpus(job.feats, job.online_ivectors, job.online_ivector_period)
        return teacher_chunks(corpus, cut, job, "training", bar, device)
    log(f"training: {len(stream.keys)} utterances, {stream.num_frames} frames -> "
        f"{len(stream)} chunks per epoch, {stream.num_outputs} outputs, streamed through "
        f"a shuffle buffer of {stream.buffer} chunks", bar)
    return stream


@dataclass
class FinetuneResult:
    """What a run did: the losses before training (None for a streamed table, which is
    not read twice for them) and after each epoch, the epoch written (0: the student as it
    came; None: no validation, so the last), steps and minutes of training."""
    start: EpochStats | None
    epochs: list[EpochStats]
    kept_epoch: int | None
    steps: int
    minutes: float


def finetune(job: FinetuneJob) -> FinetuneResult:
    """Run ``job``: targets from the teacher, train the student (keeping the best on the
    validation audio, if any), write ``job.output``."""
    from ..compute.threads import prepare_torch
    from . import parallel
    from .chunks import ChunkSet
    from .data import wav_corpus
    from .device import place, resolve_device
    from .train import EpochStats, Trainer
    from .tt_dense import DenseTTForward

    job.check()
    world = parallel.world_from_env()
    device = resolve_device(job.device, world.local_rank)
    prepare_torch(job.num_threads)
    parallel.start(world, device)
    ckpt, opts = job.checkpoint, job.train
    bar = job.progress if world.main else None     # None: this process says nothing
    teacher = read_model(job.teacher).nnet
    model = read_model(job.student)
    check_dims(teacher, model.nnet)
    if job.feats:
        chunks = table_chunks(job, teacher, model.nnet, bar, device)
        fsf = job.frame_subsampling_factor or 1
    else:
        corpus = wav_corpus(job.model_dir, job.data, job.dither, bool(bar), job.perturbation)
        fsf = job.frame_subsampling_factor or corpus.frame_subsampling_factor or 1
        cut = chunker(teacher, model.nnet, fsf, job, corpus.ivector_period, device)
        chunks = teacher_chunks(corpus, cut, job, "training", bar, device)
    valid = None
    if job.valid_data:
        corpus = wav_corpus(job.model_dir, job.valid_data, job.dither, bool(bar))
        valid = teacher_chunks(corpus, cut, job, "validation", bar, device)
    student = DenseTTForward(model.nnet)
    if student.dense:
        log(f"{len(student.dense)} TT layers trained through their cores (dense products)", bar)
    trainer = Trainer(place(student, device), chunks, opts, valid, world, device)
    if trainer.qat is not None:
        log(f"quantization-aware: {len(trainer.qat.weights)} weight matrices through "
            f"codebooks of at most {1 << trainer.qat.bits} values (pack --bits="
            f"{trainer.qat.bits}), refit every epoch", bar)
    if world.distributed:
        log(f"{world.size} processes, {opts.batch_size} chunks each per step: global batch "
            f"{opts.batch_size * world.size}", bar)
    if job.resume:
        trainer.load(ckpt)
        log(f"resuming {ckpt} at step {trainer.step} of {trainer.total_steps}", bar)
    elif isinstance(chunks, ChunkSet):     # a streamed table is not read twice for this
        trainer.start = EpochStats(0, trainer.evaluate(chunks), 0.0, trainer.validate(0))
        log(f"loss before training: {trainer.start.loss:.5g}"
            + with_valid(trainer.start.valid_loss), bar)

    def on_epoch(t: Trainer, stats) -> None:
        where = f" abandoned after {stats.steps} steps (twice the untrained student's " \
            f"{t.best.loss:.5g} or more)" if stats.steps is not None else ""
        log(f"epoch {stats.epoch}/{opts.epochs}{where}: loss {stats.loss:.5g}"
            f"{with_valid(stats.valid_loss)}, lr {stats.lr:.3g}"
            + (f"; rejected: back to epoch {t.best.epoch}, learning rates x{t.lr_scale:g} "
               "from now" if stats.rejected else ""), bar)

    try:
        # --max-minutes is the training budget: its clock starts now, with the targets ready
        trainer.train(ckpt, progress=bool(bar),
                      checkpoint_minutes=job.checkpoint_minutes, on_epoch=on_epoch)
    except KeyboardInterrupt:
        if os.path.exists(ckpt):
            log(f"checkpoint {ckpt} at step {trainer.step}; continue with --resume",
                None if bar is None else False)
        raise
    keep_best(trainer, bar)
    if world.main:
        if trainer.qat is not None:
            trainer.qat.apply()                      # W := Q(W)
        trainer.student.write_back()
        if trainer.qat is not None:
            model = trainer.qat.on_codebooks(model)
        write_model(model, job.output, binary=job.binary)
        log(f"wrote {job.output} after {trainer.step} steps, {trainer.elapsed / 60:.1f} min",
            bar)
        if os.path.exists(ckpt):
            os.unlink(ckpt)
    parallel.stop(world)
    return FinetuneResult(trainer.start, list(trainer.history),
                          None if trainer.best is None else trainer.best.epoch,
                          trainer.step, trainer.elapsed / 60)


def with_valid(loss: float | None) -> str:
    """``, valid X`` for a log line, or nothing without validation."""
    return "" if loss is None else f", valid {loss:.5g}"


def keep_best(trainer: Trainer, bar: bool | None) -> None:
    """Put the best validated parameters back into the student, saying which they are."""
    if trainer.best is None:
        return
    if trainer.stopped_early:
        log(f"no better validation loss for {trainer.opts.early_stop_patience} epochs: "
            "stopped early", bar)
    log(f"keeping the student after epoch {trainer.best.epoch} (valid "
        f"{trainer.best.loss:.5g})", bar)
    trainer.restore_best()
