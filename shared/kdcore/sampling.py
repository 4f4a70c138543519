"""A sampler whose randomness is a pure function of (seed, epoch, sample).

It yields ``(index, sample_seed)`` pairs; a dataset that augments with ``sample_seed`` produces the same
augmented sample whatever the number of DataLoader workers, after a resume, or on any DDP rank.
Plain ``int`` keys mean "no augmentation" (evaluation).
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import Sampler

from .seeding import derive_seed

__all__ = ["SeededSampler", "split_key"]


def split_key(key: int | tuple[int, int]) -> tuple[int, int | None]:
    """``(index, seed)`` from a sampler key; ``seed`` is None for evaluation keys."""
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return int(key), None


class SeededSampler(Sampler[tuple[int, int]]):
    """Shuffled (index, seed) pairs per epoch, sharded over ``world_size`` ranks like DistributedSampler.

    Example:
        >>> s = SeededSampler(5, seed=0); s.set_epoch(1)
        >>> sorted(i for i, _ in s)
        [0, 1, 2, 3, 4]
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if n <= 0:
            raise ValueError(f"cannot sample from an empty dataset (n={n})")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.per_rank = math.ceil(n / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "order", self.epoch))
            order = torch.randperm(self.n, generator=generator).tolist()
        else:
            order = list(range(self.n))
        # Pad by wrapping around so every rank gets the same number of samples (as DistributedSampler does).
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / self.n))[:total]
        for index in order[self.rank:total:self.world_size]:
            yield index, derive_seed(self.seed, "sample", self.epoch, index)
