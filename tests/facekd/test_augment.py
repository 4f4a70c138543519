"""Augmentation: flips relabel left/right, points follow the image, K is kept, one seed fixes everything."""

from __future__ import annotations

import random

import numpy as np
import pytest

from facekd.augment import (LandmarkHorizontalFlip, PixelCentreResize, augment_sample, build_train_augment,
                            hflip_landmarks)
from facekd.geometry import box_from_landmarks, crop_face
from facekd.pts_files import read_pts
from facekd.schemes import get_scheme
from kdcore.images import read_image

SIZE = 64
OFF = dict(flip_p=0.0, affine_p=0.0, colour_p=0.0, blur_p=0.0, occlusion_p=0.0)


def resize_only(size: int):
    """The first step of every training augmentation, alone."""
    import albumentations as A

    return A.Compose([PixelCentreResize(size)], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))


def _only(**enabled) -> dict:
    return {**OFF, **enabled}


def _blob(size: int, centre: tuple[float, float], sigma: float = 2.5) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    blob = 250.0 * np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * sigma**2))
    return np.repeat(np.round(blob).astype(np.uint8)[..., None], 3, axis=2)


def _centroid(image: np.ndarray) -> np.ndarray:
    weights = image.astype(np.float64).mean(axis=2)
    yy, xx = np.mgrid[0:weights.shape[0], 0:weights.shape[1]]
    return np.array([(weights * xx).sum(), (weights * yy).sum()]) / weights.sum()


@pytest.fixture(scope="module")
def real_face(shared_fixtures):
    pts_files = sorted((shared_fixtures / "faces-lfpw").glob("*.pts"))
    if not pts_files:
        pytest.skip("no LFPW faces in ../shared/fixtures")
    points = read_pts(pts_files[0], n_points=68)
    image = read_image(pts_files[0].with_suffix(".png"), mode="rgb")
    crop, matrix = crop_face(image, box_from_landmarks(points), size=SIZE)
    return crop, points @ matrix[:, :2].T + matrix[:, 2]


def test_flip_on_a_real_face(real_face):
    image, points = real_face
    scheme = get_scheme(68)
    out_image, out_points = augment_sample(build_train_augment(SIZE, scheme, **_only(flip_p=1.0)), image, points, 0)
    np.testing.assert_array_equal(out_image, image[:, ::-1])
    expected = np.empty_like(points)  # by hand: mirror about the image's vertical centre line, then relabel
    for i in range(68):
        source = scheme.flip_permutation[i]
        expected[i] = (SIZE - 1 - points[source, 0], points[source, 1])
    np.testing.assert_allclose(out_points, expected, atol=1e-4)
    for shape in (points, out_points):  # the subject's left eye (42-47) stays on the image's right
        assert shape[42:48, 0].mean() > shape[36:42, 0].mean()
        assert shape[0, 0] < shape[16, 0]


def test_flipped_points_sit_on_the_same_pixels():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    points = rng.integers(0, SIZE, size=(68, 2)).astype(np.float64)
    scheme = get_scheme(68)
    out_image, out_points = augment_sample(build_train_augment(SIZE, scheme, **_only(flip_p=1.0)), image, points, 0)
    for i in range(68):
        x, y = np.round(out_points[i]).astype(int)
        sx, sy = points[scheme.flip_permutation[i]].astype(int)
        np.testing.assert_array_equal(out_image[y, x], image[sy, sx])


def test_hflip_landmarks_is_an_involution():
    points = np.random.default_rng(0).uniform(0, 50, size=(98, 2))
    scheme = get_scheme(98)
    twice = hflip_landmarks(hflip_landmarks(points, 51, scheme.flip_permutation), 51, scheme.flip_permutation)
    np.testing.assert_allclose(twice, points, atol=1e-12)


def test_points_follow_the_image_through_affine_and_flip():
    centre = (40.0, 22.0)
    image = _blob(SIZE, centre)
    transform = build_train_augment(SIZE, get_scheme(29), rotate=30, scale=(0.8, 1.2), translate=0.1,
                                    **_only(affine_p=1.0, flip_p=0.5))
    points = np.tile(np.array([centre]), (29, 1))  # all 29 points on the blob centre
    for seed in range(6):
        out_image, out_points = augment_sample(transform, image, points, seed)
        np.testing.assert_allclose(out_points, np.tile(out_points[:1], (29, 1)), atol=1e-9)
        np.testing.assert_allclose(out_points[0], _centroid(out_image), atol=0.3)


def test_same_seed_same_output_and_seeds_differ(real_face):
    image, points = real_face
    transform = build_train_augment(SIZE, get_scheme(68))
    first = augment_sample(transform, image, points, 7)
    random.seed(123)  # global generators must not matter
    np.random.seed(123)
    augment_sample(transform, image, points, 8)
    again = augment_sample(transform, image, points, 7)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    outputs = [augment_sample(transform, image, points, seed) for seed in range(5)]
    for a in range(5):
        for b in range(a + 1, 5):
            assert not np.allclose(outputs[a][1], outputs[b][1])
            assert not np.array_equal(outputs[a][0], outputs[b][0])


def test_points_pushed_outside_are_kept():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(0, 6, size=(34, 2)), rng.uniform(SIZE - 6, SIZE, size=(34, 2))])
    image = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    transform = build_train_augment(SIZE, get_scheme(68), rotate=45, scale=(1.3, 1.4), translate=0.1)
    left_image = 0
    for seed in range(8):
        out_image, out_points = augment_sample(transform, image, points, seed)
        assert out_image.shape == (SIZE, SIZE, 3) and out_points.shape == (68, 2)
        left_image += int(((out_points < -0.5) | (out_points > SIZE - 0.5)).any())
    assert left_image >= 4  # the scenario really pushes points out


def test_occlusion_keeps_every_landmark():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    points = rng.uniform(0, SIZE - 1, size=(68, 2))
    transform = build_train_augment(SIZE, get_scheme(68), occlusion_size=(0.5, 0.6), **_only(occlusion_p=1.0))
    out_image, out_points = augment_sample(transform, image, points, 2)
    assert (out_image != image).any()  # a patch was drawn
    np.testing.assert_allclose(out_points, points, atol=1e-4)


def test_no_op_settings_change_nothing(real_face):
    image, points = real_face
    for transform in (build_train_augment(SIZE, get_scheme(68), **OFF), resize_only(SIZE)):
        out_image, out_points = augment_sample(transform, image, points, 5)
        np.testing.assert_array_equal(out_image, image)
        np.testing.assert_allclose(out_points, points, atol=1e-4)  # albumentations keeps points as float32


def test_resize_maps_pixel_centres():
    big = 128
    centre = (81.0, 30.0)
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float64)
    image = np.repeat(np.round(250 * np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / 50.0))
                      .astype(np.uint8)[..., None], 3, axis=2)
    out_image, out_points = augment_sample(resize_only(SIZE), image, np.array([centre]), 0)
    assert out_image.shape == (SIZE, SIZE, 3)
    np.testing.assert_allclose(out_points[0], ((centre[0] + 0.5) / 2 - 0.5, (centre[1] + 0.5) / 2 - 0.5), atol=1e-4)
    np.testing.assert_allclose(out_points[0], _centroid(out_image), atol=0.1)


def test_flip_refuses_a_wrong_point_count():
    import albumentations as A

    flip = A.Compose([LandmarkHorizontalFlip(get_scheme(68).flip_permutation, p=1.0)],
                     keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
    with pytest.raises(ValueError, match="expects 68 keypoints, got 5"):
        flip(image=np.zeros((8, 8, 3), np.uint8), keypoints=np.ones((5, 2)))
