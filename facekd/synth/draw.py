"""Anti-aliased, sub-pixel OpenCV drawing helpers and a Catmull-Rom curve through given points."""

from __future__ import annotations

import functools
from typing import Callable

import cv2
import numpy as np

__all__ = ["SHIFT", "fixed", "fill", "polyline", "ellipse", "curve", "draw_clipped"]

SHIFT = 4  # OpenCV fixed-point bits: coordinates at 1/16 pixel
_ONE = 1 << SHIFT

Colour = tuple[float, ...] | float


def fixed(points: np.ndarray) -> np.ndarray:
    """Float pixel coordinates (..., 2) to OpenCV's fixed-point int32."""
    return np.round(np.asarray(points, dtype=np.float64) * _ONE).astype(np.int32)


def fill(img: np.ndarray, points: np.ndarray, colour: Colour) -> None:
    cv2.fillPoly(img, [fixed(points).reshape(-1, 1, 2)], colour, cv2.LINE_AA, SHIFT)


def polyline(img: np.ndarray, points: np.ndarray, colour: Colour, thickness: float, closed: bool = False) -> None:
    cv2.polylines(img, [fixed(points).reshape(-1, 1, 2)], closed, colour, max(1, int(round(thickness))),
                  cv2.LINE_AA, SHIFT)


def ellipse(img: np.ndarray, centre: np.ndarray, axes: tuple[float, float], angle: float, colour: Colour,
            thickness: int = -1) -> None:
    cv2.ellipse(img, tuple(int(v) for v in fixed(centre)), tuple(max(1, int(v)) for v in fixed(axes)),
                float(angle), 0.0, 360.0, colour, thickness, cv2.LINE_AA, SHIFT)


def curve(points: np.ndarray, samples: int = 6, closed: bool = False) -> np.ndarray:
    """Uniform Catmull-Rom spline that passes through every given point.

    Example:
        >>> c = curve(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]]), samples=4)
        >>> bool(np.allclose(c[0], [0, 0]) and np.allclose(c[4], [1, 1]) and np.allclose(c[-1], [2, 0]))
        True
    """
    p = np.asarray(points, dtype=np.float64)
    if closed:
        ext = np.concatenate([p[-1:], p, p[:2]])
    else:
        ext = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    n = len(ext) - 3
    controls = np.stack([ext[i:i + n] for i in range(4)], axis=1)  # (segments, 4, 2)
    out = np.einsum("sk,nkd->nsd", _basis(samples), controls).reshape(-1, 2)
    return out if closed else np.concatenate([out, p[-1:]])


@functools.lru_cache(maxsize=16)
def _basis(samples: int) -> np.ndarray:
    t = np.arange(samples)[:, None] / samples
    return 0.5 * np.hstack([-t + 2 * t ** 2 - t ** 3, 2 - 5 * t ** 2 + 3 * t ** 3, t + 4 * t ** 2 - 3 * t ** 3,
                            -t ** 2 + t ** 3])


def draw_clipped(img: np.ndarray, clip: np.ndarray, draw: Callable[[np.ndarray, np.ndarray], None],
                 feather: float = 0.0) -> None:
    """Draw only inside polygon ``clip``: ``draw(layer, origin)`` paints on a copy of the region around the
    polygon, whose top-left pixel is ``origin`` (x, y) of the full image; pixels outside the polygon are dropped.
    ``feather`` > 0 softens the polygon's edge with a Gaussian of that sigma (pixels)."""
    pad = 2 + int(np.ceil(2 * feather))
    h, w = img.shape[:2]
    x0, y0 = np.floor(clip.min(0)).astype(int) - pad
    x1, y1 = np.ceil(clip.max(0)).astype(int) + pad
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return
    roi = img[y0:y1, x0:x1]
    layer = roi.copy()
    shifted = clip - np.array([x0, y0])
    draw(layer, np.array([x0, y0], dtype=np.float64))
    mask = np.zeros(roi.shape[:2], np.uint8)
    fill(mask, shifted, 255)
    if feather > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), feather)
    alpha = (mask.astype(np.float32) / 255.0)[..., None] if roi.ndim == 3 else mask.astype(np.float32) / 255.0
    roi[...] = (layer * alpha + roi * (1.0 - alpha) + 0.5).astype(img.dtype)
