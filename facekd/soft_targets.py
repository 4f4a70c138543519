"""Soft landmarks for the Tolerant teacher: an Active Shape Model fitted on one fold's training faces.

Shapes are modelled in the normalised crop frame (crop pixels / input size), where position and size are
already factored out, so the PCA modes describe pose, expression and identity rather than where the face is.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .asm import ActiveShapeModel
from .config import ASMConfig
from .formats import FaceRecord
from .geometry import apply_affine, box_from_landmarks, crop_matrix, invert_affine

__all__ = ["crop_frame_shapes", "soften_records"]


def crop_frame_shapes(records: Sequence[FaceRecord], size: int, margin: float) -> tuple[np.ndarray, list]:
    shapes, matrices = [], []
    for record in records:
        matrix = crop_matrix(box_from_landmarks(record.landmarks), size, margin)
        shapes.append(apply_affine(record.landmarks, matrix) / size)
        matrices.append(matrix)
    return np.stack(shapes), matrices


def soften_records(train: Sequence[FaceRecord], others: Sequence[Sequence[FaceRecord]], config: ASMConfig,
                   size: int, margin: float) -> tuple[ActiveShapeModel, list[np.ndarray]]:
    """Fit the ASM on ``train`` only; return it and the softened landmarks (image pixels) of each record list."""
    train_shapes, _ = crop_frame_shapes(train, size, margin)
    asm = ActiveShapeModel(variance=config.variance, clip=config.clip, align=config.align).fit(train_shapes)
    softened = []
    for records in [train, *others]:
        if not records:
            softened.append(np.zeros((0, train_shapes.shape[1], 2)))
            continue
        shapes, matrices = crop_frame_shapes(records, size, margin)
        soft = asm.soften(shapes) * size
        softened.append(np.stack([apply_affine(s, invert_affine(m)) for s, m in zip(soft, matrices)]))
    return asm, softened
