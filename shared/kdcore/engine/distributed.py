"""DDP helpers: the same code path runs single-process, CPU/gloo and CUDA/NCCL (torchrun sets the env)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["is_distributed", "is_main_process", "rank", "world_size", "wrap_ddp", "init_from_env",
           "all_gather_objects", "broadcast_object", "barrier", "gather_batch"]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def init_from_env(device: torch.device) -> bool:
    """Join the process group torchrun describes (RANK/WORLD_SIZE/MASTER_ADDR); NCCL on CUDA, gloo on CPU."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return is_distributed()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    return True


def wrap_ddp(model: nn.Module, device: torch.device, find_unused: bool = False) -> nn.Module:
    if not is_distributed():
        return model
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused)


def all_gather_objects(obj):
    """Every rank's ``obj`` in rank order (a list of one item when not distributed)."""
    if not is_distributed():
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written a teacher that the students will read)."""
    if is_distributed():
        dist.barrier()



def gather_batch(batch: torch.Tensor) -> torch.Tensor:
    """Every rank's ``batch`` concatenated in rank order: the global batch (itself when not distributed).

    Ranks must call it together with tensors of one shape (equal shards and batch sizes give that).
    """
    if not is_distributed():
        return batch
    parts = [torch.empty_like(batch) for _ in range(world_size())]
    dist.all_gather(parts, batch.contiguous())
    return torch.cat(parts)
