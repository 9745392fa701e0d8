"""torch's CPU thread policy for every job (the CLI's and the recipes' alike).

Idle OpenMP threads should sleep, not spin: with spinning, a busy core makes
multi-threaded torch several times slower.  That needs ``OMP_WAIT_POLICY=PASSIVE``
before torch loads, so the package's ``__init__`` sets it (unless the user did):
importing any part of kaldi_compress first is enough, whatever the order below.
"""
from __future__ import annotations

from ..errors import KaldiCompressError


def prepare_torch(n: int) -> None:
    """Use n torch CPU threads (0: keep torch's default); keep freed memory mapped
    between batches (:mod:`kaldi_compress.compute.allocator`)."""
    import torch

    from .allocator import keep_freed_memory

    if n < 0:
        raise KaldiCompressError("--num-threads must be >= 0")
    if n:
        torch.set_num_threads(n)
    keep_freed_memory()
