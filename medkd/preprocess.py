"""The OCT preprocessing contract, in plain numpy/OpenCV so exported predictors reproduce it exactly.

A B-scan is read as greyscale, letterboxed into a square canvas (aspect ratio kept, padded with black,
never squashed), then normalised. Training augments the letterboxed canvas; evaluation, export and
``OCTClassifier`` use :func:`preprocess` as is.

Example:
    >>> import numpy as np
    >>> x = preprocess(np.full((496, 768), 128, np.uint8), size=64)
    >>> x.shape, x.dtype
    ((1, 64, 64), dtype('float32'))
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

__all__ = ["letterbox", "normalize", "preprocess", "OCT_MEAN", "OCT_STD"]

# ImageNet statistics averaged over RGB: timm adapts pretrained first convolutions to one channel by
# summing their weights, so a grey input should be scaled like the mean of the three colour channels.
OCT_MEAN = (0.449,)
OCT_STD = (0.226,)


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the longer side to ``size`` (area interpolation when shrinking) and pad to ``size x size``.

    The image is centred; padding is 0. Works for (H, W) and (H, W, C) uint8 arrays.
    """
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    canvas = np.zeros((size, size) + image.shape[2:], dtype=image.dtype)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = resized
    return canvas


def normalize(image: np.ndarray, mean: Sequence[float] = OCT_MEAN, std: Sequence[float] = OCT_STD) -> np.ndarray:
    """uint8 (H, W[, C]) -> float32 (C, H, W) scaled to [0, 1] and standardised per channel."""
    array = image.astype(np.float32) * (1.0 / 255.0)
    if array.ndim == 2:
        array = array[None]
    else:
        array = np.ascontiguousarray(array.transpose(2, 0, 1))
    mean_arr = np.asarray(mean, np.float32).reshape(-1, 1, 1)
    std_arr = np.asarray(std, np.float32).reshape(-1, 1, 1)
    if mean_arr.shape[0] not in (1, array.shape[0]):
        raise ValueError(f"{mean_arr.shape[0]} mean values for an image with {array.shape[0]} channels")
    return (array - mean_arr) / std_arr


def preprocess(image: np.ndarray, size: int, mean: Sequence[float] = OCT_MEAN,
               std: Sequence[float] = OCT_STD) -> np.ndarray:
    """Greyscale uint8 B-scan -> the (1, size, size) float32 model input."""
    if image.ndim != 2:
        raise ValueError(f"expected a greyscale (H, W) B-scan, got shape {image.shape}")
    return normalize(letterbox(image, size), mean, std)
