"""Data-parallel fine-tuning through ``torch.distributed`` (gloo on CPU, nccl on CUDA).

``torchrun --standalone --nproc-per-node=N $(which kaldi-compress) finetune ...``
starts N processes and sets RANK, WORLD_SIZE and LOCAL_RANK; :func:`world_from_env`
reads them and :func:`start` joins the process group.  Every process holds the
whole student, reads the same data in the same seeded order and trains on a
disjoint share of every step's chunks: a step's global batch is ``--batch-size``
chunks per process times N (N processes with batch B take the same steps as one
process with batch N x B).  The gradients are summed across processes by
``all_reduce`` (each process scales its loss by its share of the step's counted
frames, so the sum is the gradient of the global batch's mean loss), so every
process applies the same update and the students stay equal.  Only rank 0 logs
and writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import KaldiCompressError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """The process that logs and writes files."""
        return self.rank == 0


def world_from_env(env=os.environ) -> World:
    """The process's place as torchrun describes it (a single process without it)."""
    try:
        world = World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                      int(env.get("LOCAL_RANK", 0)))
    except ValueError:
        raise KaldiCompressError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
    if not 0 <= world.rank < world.size:
        raise KaldiCompressError(f"RANK={world.rank} outside WORLD_SIZE={world.size}")
    return world


def start(world: World, device: torch.device) -> None:
    """Join the process group (nothing to do for a single process)."""
    import torch.distributed as dist

    if world.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                rank=world.rank, world_size=world.size)


def barrier(world: World) -> None:
    """Wait for every process (e.g. until rank 0 has written a checkpoint)."""
    import torch.distributed as dist

    if world.distributed and dist.is_initialized():
        dist.barrier()


def stop(world: World) -> None:
    """Wait for every process, then leave the group."""
    import torch.distributed as dist

    if world.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce(values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    """Element-wise sum (or max) of ``values`` over all processes, in float64."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Replace every gradient by its sum over the processes (missing ones count as 0),
    in one all_reduce."""
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    at = 0
    for p, g in zip(params, grads):
        p.grad = flat[at:at + g.numel()].view_as(g).clone()
        at += g.numel()
