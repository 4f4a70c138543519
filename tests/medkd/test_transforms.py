"""KD-OCT's augmentation and test-time views, as recipe options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medkd.config import AugmentConfig
from medkd.tasks import tta_view
from medkd.transforms import RandAugmentOCT, augment, build_augment


@pytest.fixture
def image():
    return (np.random.default_rng(0).random((40, 52)) * 255).astype(np.uint8)


def test_randaugment_ops_are_torchvisions_factors(image):
    def one(op, sign, magnitude=9.0):
        return RandAugmentOCT([op], 1, magnitude, 9.0).apply(image.copy(), chosen=[op], signs=[sign])

    f = 1 + 9 / 30
    pixels = image.astype(np.float32)  # torchvision's _blend: float blend, clamp, truncate to uint8
    assert np.array_equal(one("brightness", 1), np.clip(f * pixels, 0, 255).astype(np.uint8))
    mean = float(pixels.mean())
    assert np.array_equal(one("contrast", -1), np.clip((2 - f) * pixels + (f - 1) * mean, 0, 255).astype(np.uint8))
    assert np.array_equal(one("saturation", 1), image) and np.array_equal(one("translate", -1), image)
    sharp = one("sharpness", 1)
    border_change = np.abs(sharp[0].astype(int) - image[0])  # kept up to float truncation, as in torchvision
    assert border_change.max() <= 1 and np.abs(sharp[1:-1, 1:-1].astype(int) - image[1:-1, 1:-1]).max() > 1
    assert not np.array_equal(one("rotate", 1), image)


def test_kd_oct_teacher_augmentation_is_seeded(image):
    cfg = AugmentConfig(randaugment={"magnitude": 9, "rotate": 9}, rotate=20, shear=15, scale=(0.85, 1.15),
                        translate=0.0, erasing=0.25, erasing_scale=(0.02, 0.15), posterize=0.2,
                        posterize_bits=(4, 4), blur=0.2, blur_kernel=(3, 3))
    pipeline = build_augment(cfg)
    assert any(isinstance(t, RandAugmentOCT) for t in pipeline.transforms)
    a, b, c = augment(pipeline, image, 5), augment(pipeline, image, 5), augment(pipeline, image, 6)
    assert a.shape == image.shape and np.array_equal(a, b) and not np.array_equal(a, c)


def test_randaugment_needs_as_many_ops_as_it_draws():
    with pytest.raises(ValueError, match="n \\(3\\) is more than the 2 ops"):
        AugmentConfig(randaugment={"n": 3, "ops": ["brightness", "rotate"]})


def test_tta_views_are_deterministic_and_shaped():
    images = torch.rand(3, 1, 24, 32)
    index = torch.tensor([4, 9, 11])
    assert torch.equal(tta_view(images, "hflip"), images.flip(-1))
    assert torch.equal(tta_view(images, "vflip"), images.flip(-2))
    zoom = tta_view(images, "zoom")
    assert zoom.shape == images.shape and not torch.allclose(zoom, images)
    rotated = tta_view(images, "rotate", index)
    assert rotated.shape == images.shape and torch.equal(rotated, tta_view(images, "rotate", index))
    # the angle belongs to the image, not to its place in the batch
    assert torch.allclose(tta_view(images[[2]], "rotate", index[[2]]), rotated[[2]])
    identity = F.grid_sample(images, F.affine_grid(torch.eye(2, 3).expand(3, 2, 3), list(images.shape),
                                                   align_corners=False), align_corners=False)
    assert torch.allclose(identity, images, atol=1e-6)
