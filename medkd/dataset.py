"""Torch dataset of B-scans: strict decode, letterbox, seeded augmentation, normalisation."""

from __future__ import annotations

from typing import Sequence

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from kdcore.images import read_image
from kdcore.sampling import split_key

from .data import OCTRecord
from .data.volumes import read_frame
from .preprocess import OCT_MEAN, OCT_STD, letterbox, normalize
from .transforms import augment

__all__ = ["BScanDataset"]


class BScanDataset(Dataset):
    """Items are ``{"image": (1, S, S) float32, "target": class index, "index": position}``.

    Keys from :class:`kdcore.sampling.SeededSampler` (``(index, seed)``) are augmented with that seed;
    plain integer keys are not (evaluation). An unreadable image raises, naming the file: the integrity
    gate has already decided which images a run may leave out.

    ``cache_decoded`` keeps each letterboxed canvas (uint8, ``S*S`` bytes) after its first decode, so later
    epochs skip JPEG decoding and resizing; items are identical either way. Each DataLoader worker holds its
    own cache, so it pays off with ``persistent_workers`` (kdcore's loaders) or no workers.
    """

    def __init__(self, records: Sequence[OCTRecord], classes: Sequence[str], image_size: int,
                 pipeline: A.Compose | None = None, cache_decoded: bool = False):
        self.records = list(records)
        self.classes = list(classes)
        self.class_index = {name: i for i, name in enumerate(classes)}
        unknown = {r.label for r in self.records} - set(self.class_index)
        if unknown:
            raise ValueError(f"labels {sorted(unknown)} are not among the classes {list(classes)}")
        self.image_size = image_size
        self.pipeline = pipeline
        self._cache: dict[int, np.ndarray] | None = {} if cache_decoded else None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def targets(self) -> list[int]:
        return [self.class_index[r.label] for r in self.records]

    def canvas(self, index: int) -> np.ndarray:
        """The un-augmented letterboxed uint8 canvas of item ``index`` (read-only when cached)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        record = self.records[index]
        gray = read_image(record.path, "gray") if record.frame is None else read_frame(record.path, record.frame)
        canvas = letterbox(gray, self.image_size)
        if self._cache is not None:
            canvas.setflags(write=False)  # an augmentation writing in place would corrupt later epochs: make it fail
            self._cache[index] = canvas
        return canvas

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = split_key(key)
        record = self.records[index]
        canvas = self.canvas(index)
        if seed is not None:
            canvas = augment(self.pipeline, canvas, seed)
        return {"image": torch.from_numpy(normalize(canvas, OCT_MEAN, OCT_STD)),
                "target": self.class_index[record.label], "index": index}
