"""The face preprocessing contract in plain numpy/OpenCV: square crop around a box, then normalisation.

Model outputs are (2K,) crop coordinates divided by the input size; :func:`to_image_points` maps them
back to the original image's pixels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .geometry import apply_affine, invert_affine

__all__ = ["FACE_MEAN", "FACE_STD", "normalize_rgb", "to_image_points"]

FACE_MEAN = (0.485, 0.456, 0.406)
FACE_STD = (0.229, 0.224, 0.225)


def normalize_rgb(crop: np.ndarray, mean: Sequence[float] = FACE_MEAN, std: Sequence[float] = FACE_STD) -> np.ndarray:
    """RGB uint8 (S, S, 3) -> float32 (3, S, S) standardised per channel."""
    if crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"expected an RGB crop (S, S, 3), got shape {crop.shape}")
    array = crop.astype(np.float32).transpose(2, 0, 1) * (1.0 / 255.0)
    return (array - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]


def to_image_points(output: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """(2K,) normalised crop coordinates -> (K, 2) original-image pixels."""
    points = np.asarray(output, np.float64).reshape(-1, 2) * size
    return apply_affine(points, invert_affine(matrix))
