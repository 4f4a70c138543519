"""Torch dataset of face crops with landmark targets in normalised crop coordinates."""

from __future__ import annotations

from typing import Sequence

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from kdcore.sampling import split_key

from .augment import augment_sample
from .formats import FaceRecord, load_face_image
from .geometry import apply_affine, box_from_landmarks, crop_face, crop_matrix
from .preprocess import normalize_rgb

__all__ = ["FaceCropDataset"]


class FaceCropDataset(Dataset):
    """Items are ``{"image": (3, S, S), "target": (2K,), "index": i}``.

    The crop box always comes from the ground-truth landmarks (plus ``margin``), also when ``targets`` are
    the ASM-softened ones, so every model of a fold sees identical crops. ``(index, seed)`` keys are
    augmented with that seed (flip permutes left/right points); integer keys are not.
    """

    def __init__(self, records: Sequence[FaceRecord], size: int, margin: float,
                 targets: np.ndarray | None = None, pipeline: A.Compose | None = None):
        self.records = list(records)
        self.size, self.margin, self.pipeline = size, margin, pipeline
        self.targets = np.stack([r.landmarks for r in self.records]) if targets is None else np.asarray(targets)
        if self.targets.shape[0] != len(self.records):
            raise ValueError(f"{self.targets.shape[0]} target shapes for {len(self.records)} records")

    def __len__(self) -> int:
        return len(self.records)

    def mean_target(self) -> np.ndarray:
        """Mean (2K,) normalised target over the items, without augmentation (no image is decoded)."""
        shapes = [apply_affine(self.targets[i], crop_matrix(box_from_landmarks(r.landmarks), self.size, self.margin))
                  for i, r in enumerate(self.records)]
        return (np.mean(shapes, axis=0) / self.size).reshape(-1)

    def crop(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The un-augmented crop of item ``index`` and its image->crop matrix."""
        record = self.records[index]
        # Training and evaluation crop around the annotated landmarks (the usual protocol); deployed
        # predictors map a detector's box to such a box first (see facekd.predictor).
        return crop_face(load_face_image(record), box_from_landmarks(record.landmarks), size=self.size,
                         margin=self.margin)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = split_key(key)
        crop, matrix = self.crop(index)
        points = apply_affine(self.targets[index], matrix)
        if seed is not None and self.pipeline is not None:
            crop, points = augment_sample(self.pipeline, crop, points, seed)
        target = (points / self.size).astype(np.float32).reshape(-1)
        return {"image": torch.from_numpy(normalize_rgb(crop)), "target": torch.from_numpy(target), "index": index,
                "matrix": torch.from_numpy(matrix)}
