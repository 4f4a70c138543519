"""The reference OCT training data path: KD-OCT's own chain, rebuilt with the same torchvision calls.

Source: github.com/erfan-nourbakhsh/KD-OCT at commit 948f1e5550da2733ac186bb234f0504bb20aa378,
``Teacher-Training/NEH/data/dataset.py`` (``RetinalOCTDataset.__getitem__``) and
``Teacher-Training/NEH/data/augmentation.py`` (``AdvancedDataAugmentation(image_size=384, is_training=True,
use_randaugment=True)``, the teacher's training transform; ``config.image_size = 384``). Per image:

1. ``PIL.Image.open(path).convert("RGB")``
2. ``Resize((416, 416))``, ``RandomCrop(384)``
3. KD-OCT's ``RandAugmentTransform(n=2, m=9)``: two distinct ops drawn from brightness, contrast, saturation,
   sharpness (each factor ``1 +/- 9/30``), rotation (``+/- 9`` degrees) and a ``(0.09, 0.09)`` translation
4. ``RandomRotation(20)``; ``RandomAffine(degrees=0, shear=15, scale=(0.85, 1.15))``;
   ``ColorJitter(brightness=0.3, contrast=0.3, saturation=0.2, hue=0.05)``
5. ``RandomHorizontalFlip(0.5)``, ``RandomVerticalFlip(0.3)``
6. ``RandomApply([GaussianBlur(3)], p=0.2)``, ``RandomApply([RandomPosterize(bits=4)], p=0.2)``
7. ``ToTensor()``, ``RandomErasing(p=0.25, scale=(0.02, 0.15))``, ``Normalize(ImageNet mean, std)``

The chain is re-expressed here (not copied); its randomness comes from numpy's and torch's global generators,
as in the original.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

__all__ = ["KDOCT_SOURCE", "kdoct_train_transform", "kdoct_load", "KDOCTRandAugment"]

KDOCT_SOURCE = ("https://github.com/erfan-nourbakhsh/KD-OCT/blob/948f1e5550da2733ac186bb234f0504bb20aa378/"
                "Teacher-Training/NEH/data/augmentation.py")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class KDOCTRandAugment:
    """KD-OCT's ``RandAugmentTransform``: ``n`` distinct ops out of six at magnitude ``m`` (of 30)."""

    def __init__(self, n: int = 2, m: int = 9):
        self.n, self.m = n, m

    def _ops(self):
        strength = self.m / 30
        sign = lambda: float(np.random.choice([-1, 1]))  # noqa: E731
        return [
            lambda img: TF.adjust_brightness(img, 1 + strength * sign()),
            lambda img: TF.adjust_contrast(img, 1 + strength * sign()),
            lambda img: TF.adjust_saturation(img, 1 + strength * sign()),
            lambda img: TF.adjust_sharpness(img, 1 + strength * sign()),
            lambda img: TF.rotate(img, angle=strength * 30 * sign()),
            # As in the original: a sub-pixel (m/100 pixel) translation, i.e. a warp that moves almost nothing.
            lambda img: TF.affine(img, angle=0, translate=(self.m / 100, self.m / 100), scale=1.0, shear=0),
        ]

    def __call__(self, img: Image.Image) -> Image.Image:
        ops = self._ops()
        for i in np.random.choice(len(ops), self.n, replace=False):
            img = ops[i](img)
        return img


def kdoct_train_transform(image_size: int = 384) -> T.Compose:
    """The teacher's training transform of KD-OCT (``AdvancedDataAugmentation``, training mode)."""
    return T.Compose([
        T.Resize((image_size + 32, image_size + 32)),
        T.RandomCrop(image_size),
        KDOCTRandAugment(n=2, m=9),
        T.RandomRotation(20),
        T.RandomAffine(degrees=0, shear=15, scale=(0.85, 1.15)),
        T.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.2, hue=0.05),
        T.RandomHorizontalFlip(p=0.5),
        T.RandomVerticalFlip(p=0.3),
        T.RandomApply([T.GaussianBlur(kernel_size=3)], p=0.2),
        T.RandomApply([T.RandomPosterize(bits=4)], p=0.2),
        T.ToTensor(),
        T.RandomErasing(p=0.25, scale=(0.02, 0.15)),
        T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ])


def kdoct_load(path: str | os.PathLike, transform: T.Compose) -> torch.Tensor:
    """One training item of KD-OCT's ``RetinalOCTDataset``: decode as RGB, then the transform."""
    return transform(Image.open(path).convert("RGB"))
