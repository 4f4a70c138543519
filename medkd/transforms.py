"""Albumentations pipelines for B-scans, applied to the letterboxed greyscale canvas.

The teacher trains with the stronger recipe (KD-OCT's random-augment spirit: affine, flips, contrast,
gamma, blur, speckle-like noise, posterize, erasing), the student with a lighter one. Vertical flips stay
off unless a recipe asks: the vitreous is above the retina in every B-scan and models may rely on it.
"""

from __future__ import annotations

import random

import albumentations as A
import cv2
import numpy as np

from .config import AugmentConfig

__all__ = ["build_augment", "augment"]


def build_augment(config: AugmentConfig) -> A.Compose | None:
    """An albumentations pipeline for uint8 (H, W) canvases, or None when every step is off."""
    steps: list[A.BasicTransform] = []
    if config.hflip > 0:
        steps.append(A.HorizontalFlip(p=config.hflip))
    if config.vflip > 0:
        steps.append(A.VerticalFlip(p=config.vflip))
    if config.rotate > 0 or config.translate > 0 or tuple(config.scale) != (1.0, 1.0):
        steps.append(A.Affine(rotate=(-config.rotate, config.rotate), scale=tuple(config.scale),
                              translate_percent=(-config.translate, config.translate),
                              border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0))
    if config.brightness_contrast > 0:
        steps.append(A.RandomBrightnessContrast(config.brightness_contrast, config.brightness_contrast, p=0.8))
    if config.gamma > 0:
        steps.append(A.RandomGamma(gamma_limit=(80, 120), p=config.gamma))
    if config.blur > 0:
        steps.append(A.GaussianBlur(blur_limit=(3, 5), p=config.blur))
    if config.noise > 0:
        steps.append(A.MultiplicativeNoise(multiplier=(0.85, 1.15), per_channel=False, elementwise=True,
                                           p=config.noise))
    if config.posterize > 0:
        steps.append(A.Posterize(num_bits=(4, 6), p=config.posterize))
    if config.erasing > 0:
        steps.append(A.CoarseDropout(num_holes_range=(1, 3), hole_height_range=(0.05, 0.2),
                                     hole_width_range=(0.05, 0.2), fill=0, p=config.erasing))
    return A.Compose(steps) if steps else None


def augment(pipeline: A.Compose | None, image: np.ndarray, seed: int) -> np.ndarray:
    """Apply ``pipeline`` with randomness fixed by ``seed`` (same seed, same augmented image)."""
    if pipeline is None:
        return image
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return pipeline(image=image)["image"]
