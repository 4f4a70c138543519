"""Face crops as affine maps: original pixels -> model-input pixels, and back.

Coordinates are 0-based pixel centres (pixel ``(0, 0)`` covers ``[-0.5, 0.5]^2``), the convention of
``facekd.pts_files``, OpenCV's ``warpAffine`` and albumentations' keypoints. A box is ``(x0, y0, x1, y1)`` in
the same coordinates. A crop is the square of side ``max(w, h) * (1 + 2 * margin)`` centred on the box;
the box centre lands on the crop centre ``((size - 1) / 2, (size - 1) / 2)``.

Example:
    >>> import numpy as np
    >>> image = np.zeros((100, 80, 3), np.uint8)
    >>> points = np.array([[20.0, 30.0], [60.0, 70.0]])
    >>> crop, matrix = crop_face(image, box_from_landmarks(points), size=64)
    >>> crop.shape
    (64, 64, 3)
    >>> bool(np.allclose(apply_affine(apply_affine(points, matrix), invert_affine(matrix)), points))
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["box_from_landmarks", "square_box", "crop_matrix", "crop_face", "apply_affine", "invert_affine"]

Box = tuple[float, float, float, float]


def _check_box(box: Sequence[float]) -> Box:
    values = np.asarray(box, dtype=np.float64).reshape(-1)
    if values.shape != (4,) or not np.isfinite(values).all():
        raise ValueError(f"box must be 4 finite numbers (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in values)
    if x1 < x0 or y1 < y0 or max(x1 - x0, y1 - y0) <= 0:
        raise ValueError(f"box {box!r} is empty or inverted (need x0 <= x1, y0 <= y1, non-zero size)")
    return x0, y0, x1, y1


def box_from_landmarks(points: np.ndarray, margin: float = 0.0) -> Box:
    """The landmarks' bounding box, grown by ``margin`` times its width/height on each side."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise ValueError(f"points must have shape (K, 2) with K > 0, got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("points contain non-finite coordinates")
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    return _check_box((x0 - dx, y0 - dy, x1 + dx, y1 + dy))


def square_box(box: Sequence[float], margin: float = 0.25) -> Box:
    """The square region a crop covers: side ``max(w, h) * (1 + 2 * margin)``, centred on ``box``."""
    if not math.isfinite(margin) or margin <= -0.5:
        raise ValueError(f"margin must be a finite number > -0.5, got {margin!r}")
    x0, y0, x1, y1 = _check_box(box)
    half = max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin) / 2.0
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    return cx - half, cy - half, cx + half, cy + half


def crop_matrix(box: Sequence[float], size: int, margin: float = 0.25) -> np.ndarray:
    """The 2x3 float64 affine matrix taking original pixels to ``size`` x ``size`` crop pixels."""
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    x0, y0, x1, y1 = square_box(box, margin)
    scale = size / (x1 - x0)
    centre = (size - 1) / 2.0
    return np.array([[scale, 0.0, centre - scale * (x0 + x1) / 2.0],
                     [0.0, scale, centre - scale * (y0 + y1) / 2.0]], dtype=np.float64)


def crop_face(image: np.ndarray, box: Sequence[float], size: int = 224, margin: float = 0.25,
              fill: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Crop the square around ``box`` and resample it to ``size`` x ``size``.

    Parts of the square outside the image are filled with ``fill`` (``cv2.BORDER_CONSTANT``). Strong
    downscaling first shrinks the image with ``INTER_AREA`` so the crop is not aliased; the returned
    matrix always maps the ORIGINAL image's pixels to the crop's.

    Args:
        image: (H, W) or (H, W, C) array.
        box: (x0, y0, x1, y1), e.g. from :func:`box_from_landmarks`, a dataset or a detector.
        size: side of the output crop in pixels.
        margin: extra context on each side, as a fraction of the box's longer side.
        fill: value of pixels outside the image.

    Returns:
        ``(crop, matrix)``: the crop (same dtype and channels) and the 2x3 original -> crop matrix.
    """
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image must be (H, W) or (H, W, C) with H, W > 0, got shape {image.shape}")
    matrix = crop_matrix(box, size, margin)
    source, to_source = image, np.eye(3)
    shrink = int(1.0 / matrix[0, 0])
    if shrink >= 2:
        height, width = image.shape[:2]
        new_w, new_h = max(1, round(width / shrink)), max(1, round(height / shrink))
        source = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        if source.ndim < image.ndim:  # cv2 drops a trailing channel axis of size 1
            source = source[..., None]
        sx, sy = new_w / width, new_h / height
        # cv2.resize maps pixel centres as x' = (x + 0.5) * s - 0.5
        to_source = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    from_source = np.vstack([matrix, [0.0, 0.0, 1.0]]) @ np.linalg.inv(to_source)
    crop = cv2.warpAffine(source, from_source[:2], (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(fill,) * 4)  # a bare scalar fills channel 0 only
    if crop.ndim < image.ndim:
        crop = crop[..., None]
    return crop, matrix


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map (K, 2) points through a 2x3 affine matrix; returns float64 (K, 2)."""
    points = np.asarray(points, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (K, 2), got {points.shape}")
    if matrix.shape != (2, 3):
        raise ValueError(f"matrix must have shape (2, 3), got {matrix.shape}")
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix (e.g. crop -> original pixels)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"matrix must have shape (2, 3), got {matrix.shape}")
    linear = matrix[:, :2]
    if abs(np.linalg.det(linear)) < 1e-12:
        raise ValueError(f"matrix is singular: {matrix.tolist()}")
    inverse = np.linalg.inv(linear)
    return np.hstack([inverse, -inverse @ matrix[:, 2:]])
