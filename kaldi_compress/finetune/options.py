"""The options of distillation training (no torch needed to build or check them)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import KaldiCompressError

DEFAULT_SHUFFLE_BUFFER = 5000     # chunks: nnet3-shuffle-egs's default --buffer-size


def check_pack_bits(bits: int) -> None:
    """``bits`` must be an integer that ``pack --bits`` accepts (1..8)."""
    from ..pack.codebook import check_bits
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise KaldiCompressError(f"--pack-bits: expected an integer, got {bits!r}")
    try:
        check_bits(bits)
    except ValueError as e:
        raise KaldiCompressError(f"--pack-bits: {e}") from None


def parse_pack_bits(text: str | None) -> int | None:
    """The value of ``--pack-bits`` given as text (None: not given), checked."""
    if text is None:
        return None
    try:
        bits = int(text)
    except ValueError:
        raise KaldiCompressError(f"--pack-bits: expected an integer, got {text!r}") from None
    check_pack_bits(bits)
    return bits


@dataclass(frozen=True)
class LossOptions:
    kl_weight: float = 1.0
    mse_weight: float = 0.0
    temperature: float = 1.0

    def check(self) -> None:
        if self.kl_weight < 0 or self.mse_weight < 0 or self.kl_weight + self.mse_weight == 0:
            raise KaldiCompressError("loss weights must be >= 0, and not both 0")
        if not self.temperature > 0:
            raise KaldiCompressError("--temperature must be > 0")


@dataclass
class TrainOptions:
    epochs: int = 6
    lr: float = 1e-3
    batch_size: int = 32              # chunks per step
    optimizer: str = "adam"           # adam | sgd
    warmup: float = 0.05              # fraction of training
    final_lr: float = 0.02            # fraction of the peak reached at the end
    max_grad_norm: float = 0.0        # clip the gradient's 2-norm (0: no clipping)
    max_minutes: float = 0.0          # time budget (0: none)
    seed: int = 0
    early_stop_patience: int = 0      # stop after N epochs without a better validation loss
    reject_worse: bool = False        # undo an epoch that did not lower the validation loss
    #                                   and halve the learning rate (Kaldi nnet1's newbob)
    valid_checks: int = 0             # with reject_worse, until an epoch is kept: checks within
    #                                   each epoch; one at twice the untrained student's
    #                                   loss or more abandons the epoch at once
    pack_bits: int | None = None      # quantization-aware: train through pack's B-bit codebooks
    loss: LossOptions = field(default_factory=LossOptions)

    def check(self) -> None:
        if self.epochs < 1:
            raise KaldiCompressError("--epochs must be >= 1")
        if not self.lr > 0:
            raise KaldiCompressError("--lr must be > 0")
        if self.batch_size < 1:
            raise KaldiCompressError("--batch-size must be >= 1")
        if self.optimizer not in ("adam", "sgd"):
            raise KaldiCompressError(f"--optimizer must be adam or sgd, got {self.optimizer!r}")
        if not 0 <= self.warmup < 1 or not 0 <= self.final_lr <= 1:
            raise KaldiCompressError("--warmup must be in [0, 1) and --final-lr in [0, 1]")
        if self.max_minutes < 0 or self.max_grad_norm < 0 or self.early_stop_patience < 0 \
                or self.valid_checks < 0:
            raise KaldiCompressError("--max-minutes, --max-grad-norm, --early-stop-patience "
                                     "and --valid-checks must be >= 0")
        if self.pack_bits is not None:
            check_pack_bits(self.pack_bits)
        self.loss.check()

    def schedule_dict(self) -> dict:
        """The options a resumed run must share with the checkpoint."""
        d = asdict(self)
        d.pop("max_minutes")
        return d
