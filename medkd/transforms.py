"""Albumentations pipelines for B-scans, applied to the letterboxed greyscale canvas.

The teacher trains with the stronger recipe (KD-OCT's RandAugment, affine with shear, flips, contrast, blur,
posterize, erasing; gamma and speckle-like noise on request), the student with a lighter one. Vertical flips stay
off unless a recipe asks: the vitreous is above the retina in every B-scan and models may rely on it.
"""

from __future__ import annotations

import random

import albumentations as A
import cv2
import numpy as np

from .config import AugmentConfig

__all__ = ["build_augment", "augment", "RandAugmentOCT"]


def _blend(image: np.ndarray, other: np.ndarray | float, factor: float) -> np.ndarray:
    # torchvision's _blend: factor * image + (1 - factor) * other, clipped to the uint8 range
    return np.clip(factor * image.astype(np.float32) + (1.0 - factor) * other, 0, 255).astype(np.uint8)


def _sharpness(image: np.ndarray, factor: float) -> np.ndarray:
    # torchvision's adjust_sharpness: blend with a 3x3 smoothed copy whose border pixels stay the original's
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0
    smooth = image.astype(np.float32).copy()
    smooth[1:-1, 1:-1] = cv2.filter2D(image.astype(np.float32), -1, kernel)[1:-1, 1:-1]
    return _blend(image, smooth, factor)


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_NEAREST, borderValue=0)


class RandAugmentOCT(A.ImageOnlyTransform):
    """KD-OCT's ``RandAugmentTransform`` on a uint8 grey canvas: ``n`` distinct ops, each with a random sign.

    brightness, contrast, sharpness: torchvision's factors ``1 +- magnitude/30``; rotate: ``+-rotate`` degrees
    (nearest, black fill); saturation and translate leave a grey canvas unchanged (see RandAugmentConfig).
    """

    def __init__(self, ops: list[str], n: int = 2, magnitude: float = 9.0, rotate: float = 9.0, p: float = 1.0):
        super().__init__(p=p)
        self.ops, self.n, self.magnitude, self.rotate = list(ops), n, magnitude, rotate

    def get_params(self) -> dict:
        chosen = self.py_random.sample(self.ops, self.n)
        return {"chosen": chosen, "signs": [self.py_random.choice((-1.0, 1.0)) for _ in chosen]}

    def apply(self, img: np.ndarray, chosen: list[str] = (), signs: list[float] = (), **params) -> np.ndarray:
        for op, sign in zip(chosen, signs):
            factor = 1.0 + sign * self.magnitude / 30.0
            if op == "brightness":
                img = _blend(img, 0.0, factor)
            elif op == "contrast":
                img = _blend(img, float(img.mean()), factor)
            elif op == "sharpness":
                img = _sharpness(img, factor)
            elif op == "rotate":
                img = _rotate(img, sign * self.rotate)
        return img

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("ops", "n", "magnitude", "rotate")


def build_augment(config: AugmentConfig) -> A.Compose | None:
    """An albumentations pipeline for uint8 (H, W) canvases, or None when every step is off."""
    steps: list[A.BasicTransform] = []
    if config.randaugment is not None:
        ra = config.randaugment
        steps.append(RandAugmentOCT(ra.ops, ra.n, ra.magnitude, ra.rotate))
    if config.hflip > 0:
        steps.append(A.HorizontalFlip(p=config.hflip))
    if config.vflip > 0:
        steps.append(A.VerticalFlip(p=config.vflip))
    if config.rotate > 0 or config.translate > 0 or config.shear > 0 or tuple(config.scale) != (1.0, 1.0):
        steps.append(A.Affine(rotate=(-config.rotate, config.rotate), scale=tuple(config.scale),
                              translate_percent=(-config.translate, config.translate),
                              shear=(-config.shear, config.shear),
                              border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0))
    if config.brightness_contrast > 0:
        steps.append(A.RandomBrightnessContrast(config.brightness_contrast, config.brightness_contrast, p=0.8))
    if config.gamma > 0:
        steps.append(A.RandomGamma(gamma_limit=(80, 120), p=config.gamma))
    if config.blur > 0:
        steps.append(A.GaussianBlur(blur_limit=tuple(config.blur_kernel), p=config.blur))
    if config.noise > 0:
        steps.append(A.MultiplicativeNoise(multiplier=(0.85, 1.15), per_channel=False, elementwise=True,
                                           p=config.noise))
    if config.posterize > 0:
        steps.append(A.Posterize(num_bits=tuple(config.posterize_bits), p=config.posterize))
    if config.erasing > 0 and config.erasing_scale is not None:
        steps.append(A.Erasing(scale=tuple(config.erasing_scale), ratio=(0.3, 3.3), fill=0, p=config.erasing))
    elif config.erasing > 0:
        steps.append(A.CoarseDropout(num_holes_range=(1, 3), hole_height_range=(0.05, 0.2),
                                     hole_width_range=(0.05, 0.2), fill=0, p=config.erasing))
    return A.Compose(steps) if steps else None


def augment(pipeline: A.Compose | None, image: np.ndarray, seed: int) -> np.ndarray:
    """Apply ``pipeline`` with randomness fixed by ``seed`` (same seed, same augmented image)."""
    if pipeline is None:
        return image
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return pipeline(image=image)["image"]
