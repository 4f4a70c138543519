"""albumentations pipelines for face crops with K landmarks that never drop a point.

Keypoints are 0-based pixel centres (``format="xy"``), the convention of ``facekd.geometry``. Every
pipeline keeps all K points (``remove_invisible=False``), including those pushed outside the image.

Two albumentations 2.0.8 behaviours are corrected here:

* ``A.HorizontalFlip`` mirrors x (``x' = W - 1 - x``) but keeps the row order, so the subject's left
  eye would become the "right eye" rows; :class:`LandmarkHorizontalFlip` also permutes the rows.
* ``A.Resize`` scales keypoints as ``x * s`` while ``cv2.resize`` maps pixel centres as
  ``(x + 0.5) * s - 0.5``; :class:`PixelCentreResize` uses the latter.

Randomness comes only from the transforms' ``random_generator`` / ``py_random``, so
:func:`augment_sample` (or ``compose.set_random_state``) fixes the whole augmentation with one seed.

Example:
    >>> import numpy as np
    >>> from facekd.schemes import get_scheme
    >>> aug = build_train_augment(64, get_scheme(68))
    >>> image, points = augment_sample(aug, np.zeros((64, 64, 3), np.uint8), np.full((68, 2), 30.0), seed=1)
    >>> image.shape, points.shape
    ((64, 64, 3), (68, 2))
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

from facekd.schemes import LandmarkScheme

__all__ = [
    "hflip_landmarks",
    "LandmarkHorizontalFlip",
    "PixelCentreResize",
    "build_train_augment",
    "augment_sample",
]


def hflip_landmarks(points: np.ndarray, width: int, flip_permutation: Sequence[int]) -> np.ndarray:
    """Mirror (K, 2) points of a ``width``-pixel-wide image and relabel left <-> right.

    Matches ``A.HorizontalFlip`` on the image (pixel centre ``x`` goes to ``width - 1 - x``). Being an
    involution, it also maps predictions on a flipped image back (test-time flip averaging).
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) != len(flip_permutation):
        raise ValueError(f"points must have shape ({len(flip_permutation)}, 2), got {points.shape}")
    mirrored = points.copy()
    mirrored[:, 0] = (width - 1) - points[:, 0]
    return mirrored[list(flip_permutation)]


class LandmarkHorizontalFlip(A.HorizontalFlip):
    """``A.HorizontalFlip`` that also swaps left/right landmark rows by ``flip_permutation``.

    Requires the keypoints to be exactly the K landmarks in scheme order (no dropping), which
    :func:`build_train_augment` guarantees with ``remove_invisible=False``.
    """

    def __init__(self, flip_permutation: Sequence[int], p: float = 0.5):
        super().__init__(p=p)
        self.flip_permutation = tuple(int(i) for i in flip_permutation)

    def apply_to_keypoints(self, keypoints: np.ndarray, **params: Any) -> np.ndarray:
        if len(keypoints) != len(self.flip_permutation):
            raise ValueError(f"LandmarkHorizontalFlip expects {len(self.flip_permutation)} keypoints, got "
                             f"{len(keypoints)} (were points dropped? use remove_invisible=False)")
        return super().apply_to_keypoints(keypoints, **params)[list(self.flip_permutation)]

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("flip_permutation",)


class PixelCentreResize(A.DualTransform):
    """Resize to ``size`` x ``size`` mapping keypoints as cv2 maps pixel centres; no-op at that size."""

    def __init__(self, size: int, interpolation: int = cv2.INTER_AREA, p: float = 1.0):
        super().__init__(p=p)
        self.size = int(size)
        self.interpolation = interpolation

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        if img.shape[:2] == (self.size, self.size):
            return img
        resized = cv2.resize(img, (self.size, self.size), interpolation=self.interpolation)
        return resized[..., None] if resized.ndim < img.ndim else resized

    def apply_to_keypoints(self, keypoints: np.ndarray, **params: Any) -> np.ndarray:
        height, width = params["shape"][:2]
        scaled = keypoints.copy()
        scaled[:, 0] = (keypoints[:, 0] + 0.5) * (self.size / width) - 0.5
        scaled[:, 1] = (keypoints[:, 1] + 0.5) * (self.size / height) - 0.5
        return scaled

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size", "interpolation")


def _keypoint_params() -> A.KeypointParams:
    return A.KeypointParams(format="xy", remove_invisible=False)


def build_train_augment(
    size: int,
    scheme: LandmarkScheme,
    *,
    flip_p: float = 0.5,
    rotate: float = 30.0,
    scale: tuple[float, float] = (0.9, 1.1),
    translate: float = 0.05,
    affine_p: float = 1.0,
    brightness: float = 0.25,
    contrast: float = 0.25,
    saturation: float = 0.25,
    hue: float = 0.03,
    colour_p: float = 0.8,
    blur_p: float = 0.2,
    occlusion_p: float = 0.3,
    occlusion_size: tuple[float, float] = (0.1, 0.35),
) -> A.Compose:
    """Training augmentation for ``size`` x ``size`` RGB face crops (other sizes are resized first).

    Args:
        size: output side in pixels.
        scheme: gives the flip permutation.
        flip_p: probability of a horizontal flip (with left/right relabelling).
        rotate: rotation drawn from ``[-rotate, rotate]`` degrees.
        scale: isotropic zoom range.
        translate: shift drawn from ``[-translate, translate]`` times the side, per axis.
        affine_p: probability of the rotation/zoom/shift step.
        brightness, contrast, saturation, hue: ``A.ColorJitter`` strengths (0 disables that part).
        colour_p: probability of the colour step.
        blur_p: probability of a Gaussian or motion blur.
        occlusion_p: probability of 1-2 random grey patches (``A.CoarseDropout``); landmarks under a
            patch are kept (their positions are still the labels).
        occlusion_size: patch side range as a fraction of the image side.

    A step whose probability is 0 is left out, so all-zero probabilities give the identity.
    """
    steps: list[A.BasicTransform] = [PixelCentreResize(size)]
    if flip_p > 0:
        steps.append(LandmarkHorizontalFlip(scheme.flip_permutation, p=flip_p))
    if affine_p > 0:
        # constant border: reflecting borders would add mirrored copies of the keypoints
        steps.append(A.Affine(scale=scale, keep_ratio=True, rotate=(-rotate, rotate),
                              translate_percent=(-translate, translate), border_mode=cv2.BORDER_CONSTANT,
                              fill=0, p=affine_p))
    if colour_p > 0:
        steps.append(A.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue,
                                   p=colour_p))
    if blur_p > 0:
        steps.append(A.OneOf([A.GaussianBlur(blur_limit=(3, 7)), A.MotionBlur(blur_limit=(3, 7))], p=blur_p))
    if occlusion_p > 0:
        steps.append(A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=occlusion_size,
                                     hole_width_range=occlusion_size, fill=128, p=occlusion_p))
    return A.Compose(steps, keypoint_params=_keypoint_params())


def augment_sample(transform: A.Compose, image: np.ndarray, points: np.ndarray,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``transform`` with its random state set from ``seed``; returns (image, float64 (K, 2) points).

    The same seed gives the same output whatever ran before (e.g. in another DataLoader worker).
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (K, 2), got {points.shape}")
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
    out = transform(image=image, keypoints=points)
    moved = np.asarray(out["keypoints"], dtype=np.float64).reshape(-1, 2)
    if len(moved) != len(points):
        raise RuntimeError(f"augmentation changed the landmark count from {len(points)} to {len(moved)}")
    return out["image"], moved
