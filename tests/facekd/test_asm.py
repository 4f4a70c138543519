"""ActiveShapeModel: PCA shape model with eigenvalue clipping (the Tolerant teacher's Soft-landmarks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError

from facekd.asm import ActiveShapeModel, similarity_align
from facekd.pts_files import read_pts

LFPW = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "faces-lfpw"


@pytest.fixture(scope="module")
def real_shapes() -> np.ndarray:
    files = sorted(LFPW.glob("*.pts"))
    if len(files) < 50:
        pytest.skip(f"real faces not available at {LFPW}")
    return np.stack([read_pts(f, n_points=68) for f in files])


def _orthonormal_modes(n_points: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(2 * n_points, 2)))
    return q[:, 0], q[:, 1]


@pytest.fixture
def two_mode_shapes():
    """8 shapes = mean + a_j v1 + c_j v2 with centred, orthogonal a and c: the PCA is known in closed form."""
    v1, v2 = _orthonormal_modes(5)
    mean = np.arange(10, dtype=float)
    a = 5.0 * np.array([1, 1, -1, -1, 0, 0, 0, 0])
    c = 1.0 * np.array([1, -1, 1, -1, 0, 0, 0, 0])
    shapes = (mean + a[:, None] * v1 + c[:, None] * v2).reshape(8, 5, 2)
    return shapes, mean, v1, v2, np.var(a, ddof=1), np.var(c, ddof=1)


def _hand_soften(shapes: np.ndarray, variance: float, clip: float | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Independent reference: numpy SVD of the centred data, ddof=1 eigenvalues, >= variance cut-off."""
    flat = shapes.reshape(len(shapes), -1)
    mean = flat.mean(axis=0)
    _, singular, vt = np.linalg.svd(flat - mean, full_matrices=False)
    eigen = singular ** 2 / (len(flat) - 1)
    ratio = np.cumsum(eigen) / eigen.sum()
    k = int(np.argmax(ratio >= variance)) + 1
    b = (flat - mean) @ vt[:k].T
    if clip is not None:
        b = np.clip(b, -clip * np.sqrt(eigen[:k]), clip * np.sqrt(eigen[:k]))
    return (mean + b @ vt[:k]).reshape(shapes.shape), eigen[:k], k


@pytest.mark.real_fixtures
@pytest.mark.parametrize("align", [False, True])
def test_full_variance_without_clip_is_identity_on_real_faces(real_shapes, align):
    asm = ActiveShapeModel(variance=1.0, clip=None, align=align).fit(real_shapes)
    assert asm.n_components_ == len(real_shapes) - 1  # 50 shapes in 136 dims: rank 49 after centring
    out = asm.soften(real_shapes)
    assert np.abs(out - real_shapes).max() <= 1e-8 * np.abs(real_shapes).max()


@pytest.mark.real_fixtures
@pytest.mark.parametrize("variance", [0.5, 0.9, 0.95, 0.97, 0.999])
def test_component_count_and_eigenvalues_match_sklearn(real_shapes, variance):
    flat = real_shapes.reshape(50, -1)
    reference = PCA(n_components=variance, svd_solver="full").fit(flat)
    asm = ActiveShapeModel(variance=variance).fit(real_shapes)
    assert asm.n_components_ == reference.n_components_
    np.testing.assert_allclose(asm.eigenvalues_, reference.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(np.abs(np.sum(asm.components_ * reference.components_, axis=1)), 1.0, atol=1e-8)


@pytest.mark.real_fixtures
@pytest.mark.parametrize("clip", [None, 3.0, 1.0, 0.5])
def test_soften_matches_hand_written_svd_projection(real_shapes, clip):
    expected, eigen, k = _hand_soften(real_shapes, 0.999, clip)
    asm = ActiveShapeModel(variance=0.999, clip=clip).fit(real_shapes)
    assert asm.n_components_ == k
    np.testing.assert_allclose(asm.eigenvalues_, eigen, rtol=1e-10)
    np.testing.assert_allclose(asm.soften(real_shapes), expected, atol=1e-8)


@pytest.mark.real_fixtures
def test_fewer_components_with_lower_variance(real_shapes):
    counts = [ActiveShapeModel(variance=v, align=True).fit(real_shapes).n_components_
              for v in (0.5, 0.8, 0.9, 0.95, 0.99, 1.0)]
    assert counts == sorted(counts)
    assert counts[0] < counts[3] < counts[-1] == 49


@pytest.mark.real_fixtures
@pytest.mark.parametrize("align", [False, True])
def test_softened_real_faces_obey_clip_and_move_towards_the_mean(real_shapes, align):
    clip = 1.0
    asm = ActiveShapeModel(variance=0.95, clip=clip, align=align).fit(real_shapes)
    bound = clip * np.sqrt(asm.eigenvalues_)
    soft = asm.soften(real_shapes)
    b_before = asm.transform(real_shapes)
    if align:  # the clip holds in the frame of each input shape's own alignment, as documented
        transforms = [similarity_align(s, asm.reference_) for s in real_shapes]
        aligned_soft = np.stack([sc * x @ r + t for x, (sc, r, t) in zip(soft, transforms)])
        b_after = (aligned_soft.reshape(50, -1) - asm.mean_.reshape(-1)) @ asm.components_.T
    else:
        b_after = asm.transform(soft)
    assert np.all(np.abs(b_after) <= bound * (1 + 1e-9))
    mahalanobis_before = np.sum(b_before ** 2 / asm.eigenvalues_, axis=1)
    mahalanobis_after = np.sum(b_after ** 2 / asm.eigenvalues_, axis=1)
    assert np.all(mahalanobis_after <= mahalanobis_before * (1 + 1e-9))
    assert np.any(mahalanobis_after < 0.9 * mahalanobis_before)  # a 1-sd clip must bite on 50 real faces


def test_closed_form_two_mode_model(two_mode_shapes):
    shapes, mean, v1, v2, lam1, lam2 = two_mode_shapes
    asm = ActiveShapeModel(variance=1.0, clip=3.0).fit(shapes)
    assert asm.n_components_ == 2
    np.testing.assert_allclose(asm.eigenvalues_, [lam1, lam2], rtol=1e-12)
    np.testing.assert_allclose(asm.mean_.reshape(-1), mean, atol=1e-12)
    # A shape 10 sd out along mode 1 and 1 sd along mode 2 comes back at exactly 3 sd and 1 sd.
    outlier = mean + 10 * np.sqrt(lam1) * v1 + np.sqrt(lam2) * v2
    expected = mean + 3 * np.sqrt(lam1) * v1 + np.sqrt(lam2) * v2
    np.testing.assert_allclose(asm.soften(outlier.reshape(5, 2)).reshape(-1), expected, atol=1e-10)
    # Keeping 90 % of the variance (lam1 / (lam1 + lam2) = 25/26) drops mode 2 entirely.
    first_only = ActiveShapeModel(variance=0.9, clip=None).fit(shapes)
    assert first_only.n_components_ == 1
    np.testing.assert_allclose(first_only.soften(outlier.reshape(5, 2)).reshape(-1),
                               mean + 10 * np.sqrt(lam1) * v1, atol=1e-10)


def test_clip_bound_holds_for_every_mode_on_synthetic_outliers():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(60, 12, 2)) * np.linspace(0.5, 3, 24).reshape(12, 2)
    asm = ActiveShapeModel(variance=0.95, clip=2.0).fit(train)
    outliers = rng.normal(size=(20, 12, 2)) * 10
    b = asm.transform(asm.soften(outliers))
    assert np.all(np.abs(b) <= 2.0 * np.sqrt(asm.eigenvalues_) * (1 + 1e-9))
    assert np.any(np.isclose(np.abs(b), 2.0 * np.sqrt(asm.eigenvalues_)))  # the bound is reached, not just respected


def test_aligned_model_is_equivariant_to_similarity_transforms():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(10, 2)) * 20
    train = base + rng.normal(size=(40, 10, 2))
    angles, scales = rng.uniform(-0.5, 0.5, 40), rng.uniform(0.5, 2.0, 40)
    rot = lambda t: np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])  # noqa: E731
    train = np.stack([s * x @ rot(t) + rng.normal(size=2) * 50 for x, s, t in zip(train, scales, angles)])
    asm = ActiveShapeModel(variance=0.9, clip=1.0, align=True).fit(train)
    shape = base + 3 * rng.normal(size=(10, 2))
    moved = 1.7 * shape @ rot(0.3) + np.array([100.0, -40.0])
    np.testing.assert_allclose(asm.soften(moved), 1.7 * asm.soften(shape) @ rot(0.3) + np.array([100.0, -40.0]),
                               atol=1e-8)


def test_similarity_align_recovers_a_known_transform():
    rng = np.random.default_rng(2)
    shape = rng.normal(size=(7, 2))
    t = 0.8
    rotation = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    target = 2.5 * shape @ rotation + np.array([3.0, -1.0])
    scale, r, translation = similarity_align(shape, target)
    np.testing.assert_allclose([scale], [2.5])
    np.testing.assert_allclose(r, rotation, atol=1e-12)
    np.testing.assert_allclose(translation, [3.0, -1.0], atol=1e-12)


def test_single_shape_input_returns_single_shape(two_mode_shapes):
    shapes = two_mode_shapes[0]
    asm = ActiveShapeModel().fit(shapes)
    assert asm.soften(shapes[0]).shape == (5, 2)
    assert asm.transform(shapes[0]).shape == (asm.n_components_,)


def test_sklearn_conventions(two_mode_shapes):
    asm = ActiveShapeModel(variance=0.9, clip=2.0, align=True)
    assert asm.get_params()["clip"] == 2.0 and clone(asm).variance == 0.9
    assert asm.fit(two_mode_shapes[0]) is asm
    with pytest.raises(NotFittedError):
        ActiveShapeModel().soften(two_mode_shapes[0])


def test_errors_name_the_problem(two_mode_shapes):
    shapes = two_mode_shapes[0]
    with pytest.raises(ValueError, match=r"at least 2 training shapes, got 1"):
        ActiveShapeModel().fit(shapes[:1])
    with pytest.raises(ValueError, match=r"\(8, 10\)"):
        ActiveShapeModel().fit(shapes.reshape(8, 10))
    with pytest.raises(ValueError, match="identical"):
        ActiveShapeModel().fit(np.repeat(shapes[:1], 4, axis=0))
    with pytest.raises(ValueError, match="variance"):
        ActiveShapeModel(variance=1.5).fit(shapes)
    with pytest.raises(ValueError, match="clip"):
        ActiveShapeModel(clip=0.0).fit(shapes)
    with pytest.raises(ValueError, match="non-finite"):
        ActiveShapeModel().fit(np.where(np.arange(80).reshape(8, 5, 2) == 3, np.nan, shapes))
    asm = ActiveShapeModel().fit(shapes)
    with pytest.raises(ValueError, match=r"6 points .*\(2, 6, 2\).* 5 points"):
        asm.soften(np.zeros((2, 6, 2)))
