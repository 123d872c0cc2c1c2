"""DistributedDataParallel plumbing: the same ``train`` command under ``torchrun``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class World:
    """This process's place in a (possibly single-process) job."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def detect_world() -> World:
    """Read torchrun's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``)."""
    return World(
        rank=int(os.environ.get("RANK", "0")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        size=int(os.environ.get("WORLD_SIZE", "1")),
    )


def init_world(world: World, device_type: str) -> None:
    """Join the process group: NCCL on CUDA, gloo on CPU."""
    if not world.distributed:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")


def barrier(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(world: World, value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not world.distributed:
        return value
    import torch.distributed as dist

    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(world: World, value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order."""
    if not world.distributed:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, value)
    return out


def shutdown(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def sync_buffers(world: World, model: Any) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP keeps parameters identical, but each rank updates its running statistics from its own last
    batch; syncing at the end of an epoch makes validation and checkpoints the same on every rank.
    """
    if not world.distributed:
        return
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
