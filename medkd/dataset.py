"""Torch dataset of B-scans: strict decode, letterbox, seeded augmentation, normalisation."""

from __future__ import annotations

from typing import Sequence

import albumentations as A
import torch
from torch.utils.data import Dataset

from kdcore.images import read_image
from kdcore.sampling import split_key

from .data import OCTRecord
from .preprocess import OCT_MEAN, OCT_STD, letterbox, normalize
from .transforms import augment

__all__ = ["BScanDataset"]


class BScanDataset(Dataset):
    """Items are ``{"image": (1, S, S) float32, "target": class index, "index": position}``.

    Keys from :class:`kdcore.sampling.SeededSampler` (``(index, seed)``) are augmented with that seed;
    plain integer keys are not (evaluation). An unreadable image raises, naming the file: the integrity
    gate has already decided which images a run may leave out.
    """

    def __init__(self, records: Sequence[OCTRecord], classes: Sequence[str], image_size: int,
                 pipeline: A.Compose | None = None):
        self.records = list(records)
        self.class_index = {name: i for i, name in enumerate(classes)}
        unknown = {r.label for r in self.records} - set(self.class_index)
        if unknown:
            raise ValueError(f"labels {sorted(unknown)} are not among the classes {list(classes)}")
        self.image_size = image_size
        self.pipeline = pipeline

    def __len__(self) -> int:
        return len(self.records)

    @property
    def targets(self) -> list[int]:
        return [self.class_index[r.label] for r in self.records]

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = split_key(key)
        record = self.records[index]
        canvas = letterbox(read_image(record.path, "gray"), self.image_size)
        if seed is not None:
            canvas = augment(self.pipeline, canvas, seed)
        return {"image": torch.from_numpy(normalize(canvas, OCT_MEAN, OCT_STD)),
                "target": self.class_index[record.label], "index": index}
