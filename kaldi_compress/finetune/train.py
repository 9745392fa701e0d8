"""The distillation loop: the student's test-mode forward pass trained toward the teacher.

Trainable are the parameters of the student's updatable components (affine,
linear and TDNN weights and biases; not those with learning-rate-factor 0).
Everything else keeps its test-mode meaning: batch norm uses its stored
statistics (y = x * scale + offset, fixed), dropout is off.

Optimizer: Adam (or SGD with momentum 0.9), peak learning rate ``lr`` reached by
a linear warm-up over the first ``warmup`` fraction of training and then decayed
by a half cosine to ``final_lr`` x peak: with progress p in [0, 1],
lr(p) = peak * p / w for p < w, else
peak * (f + (1 - f) (1 + cos(pi (p - w) / (1 - w))) / 2).
Progress is steps done / steps planned, or the share of ``max_minutes`` used if
that is larger (a time budget shortens the schedule instead of cutting it).

With validation chunks (other audio, teacher targets computed the same way), the
loss on them is measured before training and after every epoch (and after the last,
possibly partial, one); the parameters with the lowest validation loss so far are
kept (epoch 0: the untrained student), :meth:`Trainer.restore_best` puts them back,
and with ``early_stop_patience`` N > 0 training stops once N epochs in a row have
not improved on the best.  With ``reject_worse`` (the rule of Kaldi nnet1's
``train_scheduler.sh``), an epoch whose validation loss is not below the best is
rejected: the best parameters come back, the optimizer's moments are cleared and
every later learning rate is halved (the scale compounds: 1/2, 1/4, ...).  A student
close to its teacher needs this: at the peak rate Adam moves every weight by about
``lr`` per step whatever the gradient, which can undo more than it learns.  With
``valid_checks`` K as well, until an epoch has been kept the validation loss is also
measured K times within each epoch (evenly spaced); at a check where it is at least
twice the untrained student's, the epoch is abandoned at once: rejected as above, and
started again from its first step at the halved rate (at most while the scale is >=
2^-10, so that a run always ends).  Twice, not merely above: Adam's first steps at a
rate that works disturb a close student too (compress 0.8: 1.4 times its loss after
193 steps at 1/8 of the peak rate, below it at the end of that epoch), while a rate
that only harms it doubles the loss or worse (2.0-2.3 times at 1/4 .. 1).

The state after any step (parameters, optimizer moments, epoch and step, time
used, the best parameters and their validation loss) can be saved as a checkpoint
and restored exactly; Ctrl-C (or SIGTERM) finishes the current step, saves it and
raises KeyboardInterrupt.

With ``pack_bits`` B (:mod:`.qat`), training and validation run through the B-bit
codebooks ``pack`` would use (refit at the start of every epoch; straight-through
gradients to the float weights); the codebooks are part of the checkpoint and of the
best parameters kept.

The chunks are a :class:`.chunks.ChunkSet` in memory (an epoch is a seeded
permutation of them) or a :class:`.stream.ChunkStream` (a table read as training
goes, the teacher's targets computed per batch).  Under ``torch.distributed``
(:mod:`.parallel`, a :class:`World` of N processes), a step's global batch is
``batch_size`` x N chunks: every process takes its own ``batch_size`` of them,
the gradients are summed across processes, and every decision that must agree
(stop after Ctrl-C, the time budget, validation) is reduced across them; only
rank 0 writes checkpoints.
"""
from __future__ import annotations

import io
import math
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..compute.forward import NnetForward
from ..errors import KaldiCompressError
from ..io.files import write_output
from .chunks import ChunkSet, to_device
from .loss import distill_loss
from .options import TrainOptions
from .parallel import World, all_reduce, barrier, sum_gradients
from .qat import QuantizeAware

CHECKPOINT_VERSION = 2
MIN_LR_SCALE = 2.0 ** -10              # no checks within epochs below this rate scale
ABANDON_FACTOR = 2.0                   # a check abandons the epoch at this times the untrained


def lr_factor(progress: float, warmup: float, final: float) -> float:
    """The learning-rate multiplier at progress p (see the module docstring)."""
    p = min(max(progress, 0.0), 1.0)
    if p < warmup:
        return p / warmup
    q = (p - warmup) / (1.0 - warmup)
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * q))


def trainable_parameters(student: NnetForward) -> dict[str, torch.nn.Parameter]:
    """``component.attribute`` -> parameter, for every updatable component that learns."""
    names = {id(c): n for n, c in student.nnet.components.items()}
    out: dict[str, torch.nn.Parameter] = {}
    for layer in student.layers:
        factor = layer.comp.get("<LearningRateFactor>", 1.0) if layer.comp.is_updatable else 0
        if factor == 0:
            continue
        for attr, p in layer.named_parameters(recurse=False):
            out[f"{names[id(layer.comp)]}.{attr}"] = p
    return out


@dataclass
class EpochStats:
    epoch: int
    loss: float                        # mean training loss over the epoch's steps
    lr: float                          # learning rate of the last step
    valid_loss: float | None = None    # loss on the validation chunks after the epoch
    rejected: bool = False             # undone (reject_worse): the best came back
    steps: int | None = None           # abandoned after this many steps (valid_checks)


@dataclass
class Best:
    """The parameters with the lowest validation loss so far."""
    epoch: int                         # after which epoch (0: before training)
    loss: float
    params: dict[str, torch.Tensor]
    codebooks: dict[str, torch.Tensor] | None = None   # with pack_bits: the codebooks then


def check_chunks(chunks, student: NnetForward, what: str) -> None:
    """Chunks must carry (or, streamed, compute) teacher targets of the student's
    output dimension."""
    if not isinstance(chunks, ChunkSet):
        dim = chunks.output_dim
    elif chunks.targets is None:
        raise KaldiCompressError(f"the {what} chunks have no teacher targets")
    else:
        dim = chunks.targets.shape[-1]
    if dim != student.output_dim:
        raise KaldiCompressError(f"the student has {student.output_dim} outputs, the "
                                 f"teacher {dim}")


def chunks_fingerprint(chunks) -> list | None:
    """Chunk and frame counts and a checksum of the targets (their first output; of a
    stream, of its keys and lengths)."""
    if chunks is None:
        return None
    if not isinstance(chunks, ChunkSet):
        return chunks.fingerprint()
    return [len(chunks), chunks.num_outputs, float(chunks.targets[..., 0].double().sum())]


class Trainer:
    """Trains ``student`` on ``chunks`` (whose ``targets`` are the teacher's outputs, or
    a stream computing them), keeping the best parameters on ``valid`` chunks if given;
    one process of ``world``, computing on ``device`` (where the student is)."""

    def __init__(self, student: NnetForward, chunks, opts: TrainOptions,
                 valid: ChunkSet | None = None, world: World = World(),
                 device: torch.device = torch.device("cpu")):
        opts.check()
        check_chunks(chunks, student, "training")
        if valid is not None:
            check_chunks(valid, student, "validation")
        self.student, self.chunks, self.opts, self.valid = student, chunks, opts, valid
        self.world, self.device = world, device
        self.params = trainable_parameters(student)
        if not self.params:
            raise KaldiCompressError("the student has no trainable parameters")
        for p in student.parameters():
            p.requires_grad_(False)
        for p in self.params.values():
            p.requires_grad_(True)
        plist = list(self.params.values())
        if opts.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(plist, lr=opts.lr)
        else:
            self.optimizer = torch.optim.SGD(plist, lr=opts.lr, momentum=0.9)
        self.qat = None if opts.pack_bits is None else QuantizeAware(student, opts.pack_bits)
        self.steps_per_epoch = -(-len(chunks) // (opts.batch_size * world.size))
        self.total_steps = opts.epochs * self.steps_per_epoch
        self.step = 0                  # steps done
        self.elapsed = 0.0             # seconds used by earlier runs (restored checkpoints)
        self.history: list[EpochStats] = []
        self.start: EpochStats | None = None   # epoch 0: the losses before training
        self.best: Best | None = None  # set by validate()
        self.lr_scale = 1.0            # halved by every rejected epoch (reject_worse)
        self._epoch_loss = [0.0, 0]    # running sum, count within the current epoch
        self._stop = False             # stop after this step (agreed by all processes)
        self._interrupted = False      # Ctrl-C seen by this process
        self._clock = lambda: self.elapsed   # seconds used, this run included (train())
        self._agreed_elapsed = 0.0     # the clock all processes agreed on at the last step

    # --- schedule ----------------------------------------------------------------------
    def progress(self, elapsed: float) -> float:
        p = self.step / self.total_steps
        if self.opts.max_minutes:
            p = max(p, elapsed / (60.0 * self.opts.max_minutes))
        return p

    def batches(self, epoch: int) -> list[torch.Tensor]:
        """This process's chunk indexes of each step of an epoch: a seeded shuffle cut
        into global batches of ``batch_size`` x processes, and this process's part."""
        g = torch.Generator().manual_seed(self.opts.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.chunks), generator=g)
        b, r = self.opts.batch_size, self.world.rank
        return [step[r * b:(r + 1) * b] for step in perm.split(b * self.world.size)]

    def epoch_batches(self, epoch: int, first: int):
        """This process's batches of an epoch from step ``first`` on: chunk indexes, or
        the :class:`.stream.Batch` objects of a stream."""
        if isinstance(self.chunks, ChunkSet):
            return iter(self.batches(epoch)[first:])
        return self.chunks.batches(epoch, first, self.opts.batch_size, self.world)

    # --- one step -----------------------------------------------------------------------
    def _batch(self, idx, chunks: ChunkSet | None = None) -> tuple:
        """(feats, ivectors, targets, mask, geometry) of a batch, on the device: chunks
        ``idx`` of ``chunks`` (default the training chunks), or a streamed batch."""
        chunks = self.chunks if chunks is None else chunks
        if isinstance(idx, torch.Tensor):
            feats, ivecs = chunks.inputs(idx)
            batch = (feats, ivecs, chunks.targets[idx], chunks.mask[idx])
        else:
            batch = (idx.feats, idx.ivectors, idx.targets, idx.mask)
        return (*to_device(batch, self.device), chunks.geometry)

    def loss_on(self, idx) -> torch.Tensor:
        feats, ivecs, targets, mask, geometry = self._batch(idx)
        out = self.student(feats, ivecs, geometry)
        return distill_loss(out, targets.float(), mask, self.opts.loss)

    def quantized(self):
        """A block in which the student computes with its quantized weights (with
        ``pack_bits``; else nothing changes)."""
        return nullcontext() if self.qat is None else self.qat.quantized()

    def train_step(self, idx, lr: float) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        if self.qat is not None and self.step % self.steps_per_epoch == 0:
            self.qat.refit()                 # the codebooks of this epoch
        with self.quantized():
            if self.world.distributed:
                value = self._shared_backward(idx)
            else:
                loss = self.loss_on(idx)
                loss.backward()
                value = float(loss.detach())
        if self.opts.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params.values(), self.opts.max_grad_norm)
        self.optimizer.step()
        self.step += 1
        return value

    def _shared_backward(self, idx) -> float:
        """Gradients of the global batch's mean loss, summed over the processes (whose
        shares may differ in counted frames, or be empty); the loss of the global batch.
        Also agrees on stopping (any process's Ctrl-C) and on the clock (the slowest)."""
        mine = 0 if idx is None or len(idx) == 0 else (
            int(self.chunks.mask[idx].sum()) if isinstance(idx, torch.Tensor)
            else int(idx.mask.sum()))
        loss = self.loss_on(idx) if mine else None
        total, frames = all_reduce([float(loss.detach()) * mine if mine else 0.0, mine],
                                   self.device)
        stop, clock = all_reduce([float(self._interrupted), self._clock()], self.device, "max")
        self._stop, self._agreed_elapsed = stop > 0, clock
        if loss is not None:
            (loss * (mine / frames)).backward()
        sum_gradients(list(self.params.values()))
        return total / frames

    def evaluate(self, chunks: ChunkSet, batch_size: int = 64) -> float:
        """Mean loss per counted frame on other chunks (no training); with several
        processes, each evaluates every N-th batch and the sums are reduced."""
        total = frames = 0.0
        w = self.world
        with torch.no_grad(), self.quantized():
            for b, i in enumerate(range(0, len(chunks), batch_size)):
                if b % w.size != w.rank:
                    continue
                idx = torch.arange(i, min(i + batch_size, len(chunks)))
                feats, ivecs, targets, mask, geometry = self._batch(idx, chunks)
                out = self.student(feats, ivecs, geometry)
                n = float(mask.sum())
                total += float(distill_loss(out, targets.float(), mask, self.opts.loss)) * n
                frames += n
        if w.distributed:
            total, frames = all_reduce([total, frames], self.device)
        return total / max(frames, 1.0)

    # --- validation and early stopping ---------------------------------------------------
    def validate(self, epoch: int) -> float | None:
        """The loss on the validation chunks now (None without them); keeps the
        parameters as the best if it is lower than the best so far."""
        if self.valid is None:
            return None
        loss = self.evaluate(self.valid)
        if self.best is None or loss < self.best.loss:
            self.best = Best(epoch, loss, {k: p.detach().clone() for k, p in self.params.items()},
                             None if self.qat is None else self.qat.copy_codebooks())
        return loss

    @property
    def stopped_early(self) -> bool:
        """``early_stop_patience`` epochs in a row without a better validation loss."""
        n = self.opts.early_stop_patience
        last = self.history[-1].epoch if self.history else 0
        return bool(n and self.best is not None and last - self.best.epoch >= n)

    def restore_best(self) -> None:
        """Put the best parameters back (nothing to do without validation chunks)."""
        if self.best is not None:
            with torch.no_grad():
                for k, p in self.params.items():
                    p.copy_(self.best.params[k])
            if self.qat is not None:
                self.qat.load_codebooks(self.best.codebooks)

    # --- the loop ------------------------------------------------------------------------
    def train(self, checkpoint: str | None = None, progress: bool = False,
              started: float | None = None, checkpoint_minutes: float = 5.0,
              on_step: Callable[["Trainer", float], None] | None = None,
              on_epoch: Callable[["Trainer", EpochStats], None] | None = None) -> None:
        """Train to the end of the schedule (or of the time budget).

        ``started``: time.monotonic() when this run began (default: now); the time
        budget counts from there plus the time of restored runs.  A checkpoint is
        written after every epoch, every ``checkpoint_minutes`` and on Ctrl-C.  With
        validation chunks, stops early as ``early_stop_patience`` says."""
        started = time.monotonic() if started is None else started
        self._clock = lambda: self.elapsed + time.monotonic() - started
        self._agreed_elapsed = self.elapsed
        # several processes must agree on the time budget: the clock of the last step
        elapsed = (lambda: self._agreed_elapsed) if self.world.distributed else self._clock
        checkpoint = checkpoint if self.world.main else None
        last_save = time.monotonic()
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=self.total_steps, initial=self.step, desc="finetune",
                       unit="step", file=sys.stderr, dynamic_ncols=True)
        if self.best is None:
            self.validate(0)
        restore = self._catch_interrupt()
        try:
            while self.step < self.total_steps and self.progress(elapsed()) < 1.0 \
                    and not self.stopped_early:
                epoch, first = divmod(self.step, self.steps_per_epoch)
                for idx in self.epoch_batches(epoch, first):
                    lr = self.opts.lr * self.lr_scale * lr_factor(
                        self.progress(elapsed()), self.opts.warmup, self.opts.final_lr)
                    loss = self.train_step(idx, lr)
                    self._epoch_loss[0] += loss
                    self._epoch_loss[1] += 1
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                    if on_step is not None:
                        on_step(self, loss)
                    done = self.progress(elapsed()) >= 1.0
                    epoch_end = self.step % self.steps_per_epoch == 0
                    worse = None if epoch_end or done else self._check_within()
                    if epoch_end or done or worse is not None:
                        self._end_epoch(epoch + 1, lr, on_epoch, worse)
                    if worse is not None and bar is not None:
                        bar.n = self.step        # the abandoned epoch starts again
                        bar.refresh()
                    if checkpoint and (self._stop or epoch_end or worse is not None or
                                       time.monotonic() - last_save > 60 * checkpoint_minutes):
                        self.save(checkpoint, elapsed())
                        last_save = time.monotonic()
                    if self._stop:
                        barrier(self.world)      # the checkpoint is written when all stop
                        raise KeyboardInterrupt
                    if done or self.stopped_early or worse is not None:
                        break
        finally:
            restore()
            if bar is not None:
                bar.close()
        self.elapsed = elapsed()

    def _check_within(self) -> float | None:
        """A check within the epoch (``valid_checks``, while no epoch has been kept): the
        validation loss if it is ``ABANDON_FACTOR`` times the untrained student's or
        more, else None."""
        o = self.opts
        if not (o.reject_worse and o.valid_checks and self.valid is not None
                and self.best is not None and self.best.epoch == 0
                and self.lr_scale >= MIN_LR_SCALE):
            return None
        n, k = self.steps_per_epoch, o.valid_checks
        if self.step % n not in {j * n // (k + 1) for j in range(1, k + 1)}:
            return None
        loss = self.evaluate(self.valid)
        return loss if loss >= ABANDON_FACTOR * self.best.loss else None

    def _end_epoch(self, epoch: int, lr: float,
                   on_epoch: Callable[["Trainer", EpochStats], None] | None,
                   abandoned_at: float | None = None) -> None:
        """Record the epoch's mean training loss and its validation loss; with
        ``reject_worse``, undo it if the validation loss is not the best.  An epoch
        abandoned at a check (its validation loss ``abandoned_at``) is undone and its
        steps are taken back: it starts again."""
        steps = None
        if abandoned_at is None:
            valid = self.validate(epoch)
        else:
            valid, steps = abandoned_at, self.step % self.steps_per_epoch
        rejected = bool(self.opts.reject_worse and valid is not None and
                        (steps is not None or self.best.epoch != epoch))
        stats = EpochStats(epoch, self._epoch_loss[0] / self._epoch_loss[1], lr, valid,
                           rejected, steps)
        if rejected:
            self.restore_best()
            self.optimizer.state.clear()     # Adam starts its moments again
            self.lr_scale *= 0.5
        if steps is not None:
            self.step -= steps
        self.history.append(stats)
        self._epoch_loss = [0.0, 0]
        if on_epoch is not None:
            on_epoch(self, stats)

    def _catch_interrupt(self) -> Callable[[], None]:
        """First Ctrl-C or SIGTERM (what queue.pl/slurm send a job they stop; a job that a
        script starts in the background ignores SIGINT): stop after the current step; a
        second one interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {s: signal.getsignal(s) for s in signals}

        def restore() -> None:
            for s, h in previous.items():
                signal.signal(s, h)

        def handler(signum, frame):
            self._interrupted = True
            self._stop = self._stop or not self.world.distributed   # else: agreed per step
            restore()
            print("kaldi-compress: stopping after this step (again to abort)", file=sys.stderr)

        for s in signals:
            if previous[s] is not signal.SIG_IGN:    # a background job's SIGINT stays ignored
                signal.signal(s, handler)
        return restore

    # --- checkpoints -------------------------------------------------------------------
    def fingerprint(self) -> dict:
        """What a checkpoint must agree on: parameter shapes, the training and the
        validation chunks."""
        return {"params": {k: list(p.shape) for k, p in self.params.items()},
                "chunks": chunks_fingerprint(self.chunks),
                "valid": chunks_fingerprint(self.valid),
                "geometry": list(asdict(self.chunks.geometry).values())}

    def state_dict(self, elapsed: float | None = None) -> dict:
        best = None if self.best is None else \
            {"epoch": self.best.epoch, "loss": self.best.loss, "params": self.best.params}
        state = {"version": CHECKPOINT_VERSION,
                 "params": {k: p.detach().clone() for k, p in self.params.items()},
                 "optimizer": self.optimizer.state_dict(),
                 "step": self.step, "elapsed": self.elapsed if elapsed is None else elapsed,
                 "epoch_loss": list(self._epoch_loss),
                 "history": [asdict(h) for h in self.history], "world_size": self.world.size,
                 "start": None if self.start is None else asdict(self.start),
                 "best": best, "lr_scale": self.lr_scale,
                 "options": self.opts.schedule_dict(),
                 "fingerprint": self.fingerprint()}
        if self.qat is not None:
            state["qat"] = self.qat.state_dict()
            if best is not None:
                best["codebooks"] = self.best.codebooks
        return state

    def load_state_dict(self, state: dict, where: str = "checkpoint") -> None:
        if state.get("version") != CHECKPOINT_VERSION:
            raise KaldiCompressError(f"{where}: not a finetune checkpoint of this version")
        if state["fingerprint"] != self.fingerprint():
            raise KaldiCompressError(f"{where}: made for another student or other data")
        mine = self.opts.schedule_dict()
        if state.get("world_size", 1) != self.world.size:
            raise KaldiCompressError(f"{where}: made by {state.get('world_size', 1)} processes, "
                                     f"now {self.world.size} (resume with the same number: it "
                                     "sets the global batch)")
        theirs = state.get("qat", {}).get("bits")
        if theirs != self.opts.pack_bits:
            raise KaldiCompressError(f"{where}: made with --pack-bits={theirs or 'off'}, now "
                                     f"{self.opts.pack_bits or 'off'} (resume with the same "
                                     "options)")
        for k, v in state["options"].items():
            if mine.get(k) != v:
                raise KaldiCompressError(f"{where}: made with {k}={v}, now {mine.get(k)} "
                                         "(resume with the same options)")
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(state["params"][k])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        self._epoch_loss = [float(state["epoch_loss"][0]), int(state["epoch_loss"][1])]
        self.history = [EpochStats(**h) for h in state["history"]]
        self.start = None if state.get("start") is None else EpochStats(**state["start"])
        self.best = None if state["best"] is None else Best(**state["best"])
        self.lr_scale = float(state.get("lr_scale", 1.0))
        if self.qat is not None:
            self.qat.load_state_dict(state["qat"], where)
            if self.best is not None and self.best.codebooks is None:
                raise KaldiCompressError(f"{where}: its best parameters have no codebooks")

    def save(self, path: str, elapsed: float | None = None) -> None:
        """Write a checkpoint atomically (temporary file, then rename)."""
        buf = io.BytesIO()
        torch.save(self.state_dict(elapsed), buf)
        write_output(path, [buf.getbuffer()])

    def load(self, path: str) -> None:
        if not Path(path).is_file():
            raise KaldiCompressError(f"{path}: no checkpoint to resume from")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a corrupt file
            raise KaldiCompressError(f"{path}: cannot read checkpoint: "
                                     f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
                                     ) from None
        if not isinstance(state, dict):
            raise KaldiCompressError(f"{path}: not a finetune checkpoint")
        self.load_state_dict(state, path)
