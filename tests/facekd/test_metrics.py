"""NME, failure rate, CED and its exact AUC: golden values by hand on real faces and on hand-made lists."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from facekd.pts_files import read_pts
from facekd.metrics import auc, ced_curve, failure_rate, nme, normaliser, per_landmark_error, point_errors
from facekd.schemes import SCHEMES

LFPW = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "faces-lfpw"


@pytest.fixture(scope="module")
def real_faces() -> tuple[list[Path], np.ndarray]:
    files = sorted(LFPW.glob("*.pts"))
    if len(files) < 50:
        pytest.skip(f"real faces not available at {LFPW}")
    return files, np.stack([read_pts(f, n_points=68) for f in files])


def _raw_points(path: Path) -> list[tuple[float, float]]:
    """The .pts body parsed here directly (not through facekd.pts_files), 1-based as on disk."""
    lines = path.read_text().split("{")[1].split("}")[0].split("\n")
    return [tuple(map(float, line.split())) for line in lines if line.strip()]


@pytest.mark.real_fixtures
def test_shift_by_3_4_pixels_gives_5_over_inter_ocular_distance(real_faces):
    files, gt = real_faces
    pred = gt + np.array([3.0, 4.0])
    expected = []
    for path in files:
        points = _raw_points(path)
        (x36, y36), (x45, y45) = points[36], points[45]  # 0-based 36/45 = lines 37/46 of the file
        expected.append(5.0 / math.hypot(x45 - x36, y45 - y36))
    np.testing.assert_allclose(nme(pred, gt), expected, rtol=1e-12)
    assert nme(pred[0], gt[0]) == pytest.approx(expected[0], rel=1e-12)


@pytest.mark.real_fixtures
def test_inter_pupil_and_bbox_normalisers_on_real_faces(real_faces):
    files, gt = real_faces
    pred = gt + np.array([-3.0, 4.0])
    for i, path in enumerate(files[:10]):
        points = np.array(_raw_points(path))
        left, right = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
        width = points[:, 0].max() - points[:, 0].min()
        height = points[:, 1].max() - points[:, 1].min()
        assert nme(pred[i], gt[i], norm="inter_pupil") == pytest.approx(5.0 / np.hypot(*(right - left)), rel=1e-12)
        assert nme(pred[i], gt[i], norm="bbox") == pytest.approx(5.0 / math.sqrt(width * height), rel=1e-12)


@pytest.mark.real_fixtures
def test_one_moved_point_and_per_landmark_error(real_faces):
    files, gt = real_faces
    pred = gt.copy()
    pred[:, 30] += np.array([6.0, 8.0])  # nose tip moved by 10 px in every image
    iod = np.linalg.norm(gt[:, 45] - gt[:, 36], axis=1)
    np.testing.assert_allclose(nme(pred, gt), 10.0 / (68 * iod), rtol=1e-12)
    per_point = per_landmark_error(pred, gt)
    assert per_point.shape == (68,)
    assert per_point[30] == pytest.approx(np.mean(10.0 / iod), rel=1e-12)
    assert np.count_nonzero(per_point) == 1
    assert point_errors(pred, gt).shape == (50, 68)


def test_explicit_eye_indices_for_98_and_29_point_schemes():
    rng = np.random.default_rng(0)
    for n_points, (i, j) in ((98, (60, 72)), (29, (8, 9))):
        gt = rng.uniform(0, 100, size=(4, n_points, 2))
        gt[:, i], gt[:, j] = [10.0, 50.0], [40.0, 90.0]  # corners 50 px apart (30-40-50 triangle)
        pred = gt + np.array([0.0, 2.0])
        np.testing.assert_allclose(nme(pred, gt, eye_indices=(i, j)), 2.0 / 50.0, rtol=1e-12)
        if n_points in SCHEMES:  # the scheme, when present, must agree with the literature's corners
            np.testing.assert_allclose(nme(pred, gt), 2.0 / 50.0, rtol=1e-12)


def test_numeric_and_per_image_normalisers():
    gt = np.zeros((3, 5, 2))
    pred = gt + np.array([3.0, 4.0])
    np.testing.assert_allclose(nme(pred, gt, norm=10.0), 0.5)
    np.testing.assert_allclose(nme(pred, gt, norm=[1.0, 5.0, 10.0]), [5.0, 1.0, 0.5])
    np.testing.assert_allclose(nme(pred, gt, norm=torch.tensor([1.0, 5.0, 10.0])), [5.0, 1.0, 0.5])


def test_lists_numpy_and_tensors_agree():
    rng = np.random.default_rng(1)
    gt = rng.uniform(0, 200, size=(3, 68, 2))
    pred = gt + rng.normal(size=gt.shape)
    reference = nme(pred, gt)
    np.testing.assert_allclose(nme(pred.tolist(), gt.tolist()), reference, rtol=1e-15)
    np.testing.assert_allclose(nme(torch.tensor(pred, requires_grad=True), torch.tensor(gt)), reference,
                               rtol=1e-15)
    assert auc(torch.tensor(reference)) == auc(list(reference)) == auc(reference)


def test_failure_rate_counts_strictly_greater():
    nmes = [0.02, 0.05, 0.1, 0.1000001, 0.3]
    assert failure_rate(nmes) == pytest.approx(2 / 5)
    assert failure_rate(nmes, threshold=0.08) == pytest.approx(3 / 5)
    assert failure_rate([0.0]) == 0.0


def test_auc_on_hand_made_lists():
    # CED integrals by hand: an image with nme e contributes (T - e) / T when e < T, else 0.
    assert auc([0.0, 0.05, 0.1, 0.2], threshold=0.1) == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    assert auc([0.0] * 7) == 1.0
    assert auc([0.5, 0.1]) == 0.0
    assert auc([0.02, 0.08], threshold=0.08) == pytest.approx((0.75 + 0.0) / 2)


def test_auc_is_exact_against_fine_numerical_integration():
    rng = np.random.default_rng(2)
    nmes = np.concatenate([rng.gamma(2.0, 0.02, size=300), [0.0, 0.1, 0.25]])
    threshold = 0.1
    # Midpoint rule on 10^6 cells, CED counted directly: error <= (#steps) * cell / N, about 1e-7.
    cells = 1_000_000
    x = (np.arange(cells) + 0.5) * threshold / cells
    ced = np.searchsorted(np.sort(nmes), x, side="right") / nmes.size
    numeric = ced.mean()
    assert auc(nmes, threshold) == pytest.approx(numeric, abs=1e-6)
    assert auc(nmes, threshold, step=1e-5) == pytest.approx(numeric, abs=1e-4)  # the grid variant is close


def test_ced_curve():
    x, y = ced_curve([0.0, 0.05, 0.2], threshold=0.1, n_points=3)
    np.testing.assert_allclose(x, [0.0, 0.05, 0.1])
    np.testing.assert_allclose(y, [1 / 3, 2 / 3, 2 / 3])


def test_errors_name_shapes_and_reasons():
    with pytest.raises(ValueError, match=r"\(2, 68, 2\) and \(2, 67, 2\)"):
        nme(np.zeros((2, 68, 2)), np.zeros((2, 67, 2)))
    with pytest.raises(ValueError, match=r"\(2, 68, 3\)"):
        nme(np.zeros((2, 68, 3)), np.zeros((2, 68, 3)))
    with pytest.raises(ValueError, match="not positive for image 0"):
        nme(np.ones((1, 68, 2)), np.zeros((1, 68, 2)))  # eye corners coincide
    with pytest.raises(ValueError, match="unknown norm"):
        nme(np.ones((68, 2)), np.ones((68, 2)), norm="eyes")
    with pytest.raises(ValueError, match="one value per image"):
        nme(np.ones((2, 5, 2)), np.ones((2, 5, 2)), norm=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="no landmark scheme with 5 points"):
        nme(np.ones((5, 2)), np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"eye_indices \(3, 9\) out of range for 5"):
        normaliser(np.ones((5, 2)), eye_indices=(3, 9))
    with pytest.raises(ValueError, match="non-finite"):
        nme(np.full((68, 2), np.nan), np.ones((68, 2)))
    with pytest.raises(ValueError, match=">= 0"):
        auc([-0.1, 0.2])
    with pytest.raises(ValueError, match="1-D"):
        failure_rate([[0.1, 0.2]])
    with pytest.raises(ValueError, match="1-D"):
        auc([])
