"""Where fine-tuning computes: ``--device=auto|cpu|cuda`` (auto: CUDA when torch sees
a GPU), always in float32.

The forward pass (:class:`~kaldi_compress.compute.forward.NnetForward`) builds the
index tensors of its plans on the CPU; :func:`place` moves the network's
parameters and buffers to the device and every plan it builds from then on.  On
the CPU :func:`place` changes nothing, so CPU runs are exactly what they were.
Not covered on CUDA: the buffers of recurrent (LSTM) nodes, which the forward pass
allocates on the CPU.
"""
from __future__ import annotations

from dataclasses import fields, is_dataclass

import torch

from ..errors import KaldiCompressError

DEVICES = ("auto", "cpu", "cuda")
CPU = torch.device("cpu")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device of ``--device`` (``cuda:LOCAL_RANK`` for CUDA under torchrun)."""
    if name not in DEVICES:
        raise KaldiCompressError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return CPU
    if not torch.cuda.is_available():
        raise KaldiCompressError("--device=cuda: torch sees no CUDA device (a CPU-only "
                                 "build of torch, or no GPU): use --device=cpu or auto")
    if local_rank >= torch.cuda.device_count():
        raise KaldiCompressError(f"process {local_rank} on this node has no GPU of its own "
                                 f"({torch.cuda.device_count()} visible)")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def _moved(value, device: torch.device):
    """``value`` with every tensor in it (dataclass fields, lists, tuples) on ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_moved(v, device) for v in value)
    if is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            setattr(value, f.name, _moved(getattr(value, f.name), device))
    return value


def place(forward, device: torch.device):
    """Put an NnetForward (parameters, buffers, plans) on ``device``; returns it."""
    if device == CPU:
        return forward
    forward.to(device)
    build = forward.plan

    def plan_on_device(geometry, given=frozenset()):
        return _moved(build(geometry, given), device)

    forward.plan = plan_on_device
    return forward
