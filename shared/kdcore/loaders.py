"""Data loaders of a fold: seeded, sharded over DDP ranks, the global batch checked before any work."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from .device import loader_options
from .engine.distributed import rank, world_size
from .errors import ConfigError
from .sampling import SeededSampler
from .seeding import derive_seed, seed_worker

__all__ = ["train_loader", "eval_loader", "check_per_rank_batch", "sampler_seed"]


def train_loader(dataset: Dataset, batch_size: int, device: torch.device, workers: int, seed: int,
                 key: str = "train.batch_size") -> DataLoader:
    """Shuffled, seeded (index, seed) keys; sharded over DDP ranks, each taking its share of the batch.

    ``batch_size`` is the global batch; under DDP it must divide over the ranks into at least 2 images per GPU
    (``key`` names the recipe key in the error).
    """
    sampler = SeededSampler(len(dataset), seed=seed, rank=rank(), world_size=world_size())
    check_per_rank_batch(batch_size, world_size(), key)
    per_rank = max(1, batch_size // world_size())
    # Dropping a last partial batch avoids a BatchNorm step on a single image.
    return DataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=len(sampler) > per_rank,
                      worker_init_fn=seed_worker, **loader_options(device, workers))


def check_per_rank_batch(batch_size: int, world: int, key: str = "train.batch_size") -> None:
    """Refuse a global batch that DDP would silently change (not divisible) or shrink to BatchNorm over one image."""
    if world <= 1:
        return
    if batch_size % world:
        raise ConfigError(f"{key}: {batch_size} does not divide over {world} GPUs (the global batch would become "
                          f"{batch_size // world * world}); use a multiple of {world}")
    if batch_size // world < 2:
        raise ConfigError(f"{key}: {batch_size} over {world} GPUs leaves {batch_size // world} image per GPU "
                          "(BatchNorm over one image); use at least 2 per GPU, and consider "
                          "runtime.sync_batchnorm: true")


def eval_loader(dataset: Dataset, batch_size: int, device: torch.device, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, **loader_options(device, workers))


def sampler_seed(seed: int, role: str, fold: int) -> int:
    return derive_seed(seed, role, fold, "sampler")
