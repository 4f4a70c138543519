"""Face crops: matrices by hand, point round trips, and image content landing where the matrix says."""

from __future__ import annotations

import numpy as np
import pytest

from facekd.geometry import (apply_affine, box_from_landmarks, crop_face, crop_matrix, invert_affine,
                             square_box)
from facekd.pts_files import read_pts
from kdcore.images import read_image


def _blob_image(height: int, width: int, centre: tuple[float, float], sigma: float, channels: int = 3):
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    blob = 250.0 * np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * sigma**2))
    image = np.round(blob).astype(np.uint8)
    return np.repeat(image[..., None], channels, axis=2) if channels else image


def _centroid(image: np.ndarray) -> np.ndarray:
    weights = image.astype(np.float64)
    weights = weights.mean(axis=2) if weights.ndim == 3 else weights
    yy, xx = np.mgrid[0:weights.shape[0], 0:weights.shape[1]]
    return np.array([(weights * xx).sum(), (weights * yy).sum()]) / weights.sum()


def test_crop_matrix_by_hand():
    # box 40 x 20 centred at (30, 30); side 40 * (1 + 2 * 0.25) = 60, so the square spans x, y in [0, 60]
    box = (10.0, 20.0, 50.0, 40.0)
    assert square_box(box, 0.25) == pytest.approx((0.0, 0.0, 60.0, 60.0))
    matrix = crop_matrix(box, size=100, margin=0.25)
    k = 100 / 60
    np.testing.assert_allclose(matrix, [[k, 0, 49.5 - 30 * k], [0, k, 49.5 - 30 * k]], atol=1e-12)
    # the square's edges land on the crop's outer pixel edges (-0.5 and 99.5), its centre on the crop centre
    corners = apply_affine(np.array([[0.0, 0.0], [60.0, 60.0], [30.0, 30.0]]), matrix)
    np.testing.assert_allclose(corners, [[-0.5, -0.5], [99.5, 99.5], [49.5, 49.5]], atol=1e-12)


def test_box_from_landmarks_and_margin():
    points = np.array([[10.0, 5.0], [30.0, 45.0], [20.0, 25.0]])
    assert box_from_landmarks(points) == pytest.approx((10.0, 5.0, 30.0, 45.0))
    assert box_from_landmarks(points, margin=0.1) == pytest.approx((8.0, 1.0, 32.0, 49.0))


@pytest.mark.parametrize("seed", range(5))
def test_points_round_trip(seed):
    rng = np.random.default_rng(seed)
    points = rng.uniform(-50, 500, size=(68, 2))
    x0, y0 = rng.uniform(0, 300, size=2)
    box = (x0, y0, x0 + rng.uniform(5, 200), y0 + rng.uniform(5, 200))
    matrix = crop_matrix(box, size=int(rng.integers(16, 300)), margin=float(rng.uniform(0, 0.5)))
    back = apply_affine(apply_affine(points, matrix), invert_affine(matrix))
    np.testing.assert_allclose(back, points, atol=1e-6)
    np.testing.assert_allclose(invert_affine(invert_affine(matrix)), matrix, atol=1e-9)


@pytest.mark.parametrize("channels", [3, 0])
@pytest.mark.parametrize("image_size,box,size", [
    ((120, 100), (30.0, 40.0, 70.0, 80.0), 96),        # upscaling
    ((900, 700), (100.0, 150.0, 600.0, 650.0), 64),    # strong downscaling (INTER_AREA pre-shrink)
    ((80, 90), (0.0, 0.0, 40.0, 30.0), 48),            # box touching the top-left border
])
def test_crop_content_lands_where_the_matrix_says(channels, image_size, box, size):
    height, width = image_size
    rng = np.random.default_rng(len(box) + size)
    x0, y0, x1, y1 = box
    centre = (float(rng.uniform(x0 + 0.3 * (x1 - x0), x0 + 0.7 * (x1 - x0))),
              float(rng.uniform(y0 + 0.3 * (y1 - y0), y0 + 0.7 * (y1 - y0))))
    sigma = 0.06 * max(x1 - x0, y1 - y0)
    image = _blob_image(height, width, centre, sigma, channels)
    crop, matrix = crop_face(image, box, size=size, margin=0.25)
    assert crop.shape == (size, size, 3) if channels else crop.shape == (size, size)
    assert crop.dtype == np.uint8
    expected = apply_affine(np.array([centre]), matrix)[0]
    np.testing.assert_allclose(_centroid(crop), expected, atol=0.25)


def test_outside_the_image_is_filled_with_the_constant():
    image = np.full((50, 60, 3), 200, np.uint8)
    crop, matrix = crop_face(image, (0.0, 0.0, 20.0, 20.0), size=40, margin=0.5, fill=7)
    # the square spans [-10, 30]; crop pixels whose source centre is left of -0.5 are outside
    inside = apply_affine(np.array([[0.0, 0.0]]), matrix)[0]
    assert (crop[:, : int(np.floor(inside[0])) - 1] == 7).all()
    assert (crop[: int(np.floor(inside[1])) - 1] == 7).all()
    assert (crop[int(np.ceil(inside[1])) + 1:, int(np.ceil(inside[0])) + 1:] == 200).all()


def test_real_face_crop(shared_fixtures):
    folder = shared_fixtures / "faces-lfpw"
    pts_files = sorted(folder.glob("*.pts"))[:3]
    if not pts_files:
        pytest.skip("no LFPW faces in ../shared/fixtures")
    for pts in pts_files:
        points = read_pts(pts, n_points=68)
        image = read_image(pts.with_suffix(".png"), mode="rgb")
        crop, matrix = crop_face(image, box_from_landmarks(points), size=64, margin=0.25)
        assert crop.shape == (64, 64, 3)
        mapped = apply_affine(points, matrix)
        # the landmark box, grown by 25% of its longer side, fits the crop with a margin on every side
        assert mapped.min() >= 64 * 0.25 / 1.5 - 0.5 - 1e-9 and mapped.max() <= 64 - 64 * 0.25 / 1.5 + 1e-9
        np.testing.assert_allclose(apply_affine(mapped, invert_affine(matrix)), points, atol=1e-6)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="empty or inverted"):
        crop_matrix((5.0, 5.0, 5.0, 5.0), 32)
    with pytest.raises(ValueError, match="4 finite numbers"):
        crop_matrix((0.0, 0.0, np.nan, 5.0), 32)
    with pytest.raises(ValueError, match=r"shape \(K, 2\)"):
        apply_affine(np.zeros((3, 3)), np.eye(2, 3))
    with pytest.raises(ValueError, match="singular"):
        invert_affine(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        crop_face(np.zeros((0, 4)), (0.0, 0.0, 2.0, 2.0), 8)
