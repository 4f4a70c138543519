"""Active shape model (point distribution model) that makes the Tolerant teacher's Soft-landmarks.

Fard & Mahoor (CVIU 2022) soften each ground-truth shape with an ASM: project the shape on the leading PCA
modes of the training shapes, clip every mode weight ``b_i`` to ``+-3 sqrt(lambda_i)`` and reconstruct. Their
code (aliprf/KD-Loss, ``pca_utility.py``) fits scikit-learn ``PCA(n_components=p/100)`` on the raw, unaligned
flattened shapes (``load_pca_obj`` defaults to ``p = 97``), uses ``explained_variance_`` (``ddof=1``) as the
eigenvalues and clips at 3 standard deviations. The defaults here keep the clip (3.0) and no alignment; the
variance defaults to 0.95 (pass ``variance=0.97`` for the code's default).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> shapes = rng.normal(size=(40, 5, 2))
    >>> asm = ActiveShapeModel(variance=1.0, clip=None).fit(shapes)
    >>> bool(np.allclose(asm.soften(shapes), shapes))
    True
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.utils.validation import check_is_fitted

__all__ = ["ActiveShapeModel", "similarity_align"]


def _as_shapes(shapes, what: str) -> tuple[np.ndarray, bool]:
    """(N, K, 2) float64 copy and whether the input was a single (K, 2) shape."""
    array = np.asarray(shapes, dtype=np.float64)
    single = array.ndim == 2
    if single:
        array = array[None]
    if array.ndim != 3 or array.shape[2] != 2:
        raise ValueError(f"{what} must have shape (N, K, 2) or (K, 2), got {np.shape(shapes)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contain non-finite coordinates")
    return array, single


def similarity_align(shape: np.ndarray, reference: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity transform (no reflection) taking ``shape`` onto ``reference``.

    Returns ``(scale, rotation, translation)`` with ``aligned = scale * shape @ rotation + translation``.
    """
    mu_s, mu_r = shape.mean(axis=0), reference.mean(axis=0)
    xs, xr = shape - mu_s, reference - mu_r
    u, sigma, vt = np.linalg.svd(xs.T @ xr)
    # Forbid reflections: a mirrored face is a different shape, not a pose.
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    sigma = sigma * np.array([1.0, d])
    rotation = u @ np.diag([1.0, d]) @ vt
    norm = float((xs ** 2).sum())
    if norm == 0.0:
        raise ValueError("cannot align a shape whose points all coincide")
    scale = float(sigma.sum()) / norm
    return scale, rotation, mu_r - scale * mu_s @ rotation


def _normalised(shape: np.ndarray) -> np.ndarray:
    centred = shape - shape.mean(axis=0)
    return centred / np.linalg.norm(centred)


class ActiveShapeModel(BaseEstimator):
    """PCA shape model whose ``soften`` clips each mode to ``+-clip * sqrt(eigenvalue)``.

    Args:
        variance: keep the fewest PCA modes whose cumulative explained-variance ratio is >= this (in (0, 1]);
            1.0 keeps every mode with non-zero variance, so ``soften`` with ``clip=None`` is the identity on
            any shape in the span of the training shapes (e.g. the training shapes themselves).
        clip: clip bound in standard deviations (None: no clipping).
        align: model shapes in a Procrustes-aligned frame (generalised Procrustes analysis to a centred,
            unit-norm reference); ``soften`` then aligns each shape to ``reference_``, softens it there and
            maps it back with the inverse of its own similarity transform.
        max_iter, tol: generalised Procrustes iterations and the mean-change tolerance (only with ``align``).

    Attributes:
        mean_: (K, 2) mean shape (in the aligned frame when ``align``).
        components_: (n_components_, 2K) orthonormal modes, rows in scikit-learn order, over ``x0, y0, x1, ...``.
        eigenvalues_: (n_components_,) variance of each mode (``ddof=1``, scikit-learn's ``explained_variance_``).
        explained_variance_ratio_: (n_components_,) share of the total variance of each kept mode.
        n_components_: number of kept modes.
        n_points_: K.
        reference_: (K, 2) Procrustes target (only with ``align``); ``mean_`` is the mean of the aligned shapes.
    """

    def __init__(self, variance: float = 0.95, clip: float | None = 3.0, align: bool = False,
                 max_iter: int = 100, tol: float = 1e-10) -> None:
        self.variance = variance
        self.clip = clip
        self.align = align
        self.max_iter = max_iter
        self.tol = tol

    def _check_params(self) -> None:
        if not 0.0 < self.variance <= 1.0:
            raise ValueError(f"variance must be in (0, 1], got {self.variance}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be positive or None, got {self.clip}")

    def fit(self, shapes, y=None) -> "ActiveShapeModel":
        """Fit on training shapes (N, K, 2), N >= 2."""
        self._check_params()
        shapes, _ = _as_shapes(shapes, "training shapes")
        if len(shapes) < 2:
            raise ValueError(f"an active shape model needs at least 2 training shapes, got {len(shapes)} "
                             f"(shapes array {shapes.shape})")
        if self.align:
            shapes = self._procrustes(shapes)
        flat = shapes.reshape(len(shapes), -1)
        if not np.ptp(flat, axis=0).any():
            raise ValueError(f"the {len(shapes)} training shapes are all identical: no shape variation to model")
        pca = PCA(n_components=None, svd_solver="full").fit(flat)
        eigenvalues = pca.explained_variance_
        # Modes below numerical rank (centring removes one; N <= 2K removes more) carry only round-off.
        nonzero = eigenvalues > eigenvalues[0] * max(flat.shape) * np.finfo(np.float64).eps
        if not nonzero.any():
            raise ValueError(f"the {len(shapes)} training shapes are all identical: no shape variation to model")
        rank = int(nonzero.sum())
        if self.variance >= 1.0:
            keep = rank
        else:
            cumulative = np.cumsum(pca.explained_variance_ratio_)
            keep = min(int(np.searchsorted(cumulative, self.variance, side="left")) + 1, rank)
        self.mean_ = pca.mean_.reshape(-1, 2)
        self.components_ = pca.components_[:keep].copy()
        self.eigenvalues_ = eigenvalues[:keep].copy()
        self.explained_variance_ratio_ = pca.explained_variance_ratio_[:keep].copy()
        self.n_components_ = keep
        self.n_points_ = shapes.shape[1]
        return self

    def _procrustes(self, shapes: np.ndarray) -> np.ndarray:
        """Generalised Procrustes analysis; sets ``reference_`` and returns the shapes aligned to it."""
        mean = _normalised(shapes[0])
        for _ in range(self.max_iter):
            aligned = np.stack([self._apply(s, *similarity_align(s, mean)) for s in shapes])
            new_mean = _normalised(aligned.mean(axis=0))
            # Pin the frame's rotation to the previous mean so it cannot drift between iterations.
            scale, rotation, _ = similarity_align(new_mean, mean)
            new_mean = new_mean @ rotation
            converged = np.abs(new_mean - mean).max() < self.tol
            mean = new_mean
            if converged:
                break
        self.reference_ = mean
        # One last pass against the final mean, so soften() re-derives exactly these transforms.
        return np.stack([self._apply(s, *similarity_align(s, mean)) for s in shapes])

    @staticmethod
    def _apply(shape, scale, rotation, translation):
        return scale * shape @ rotation + translation

    def _prepare(self, shapes, what: str) -> tuple[np.ndarray, bool, list | None]:
        check_is_fitted(self, "components_")
        shapes, single = _as_shapes(shapes, what)
        if shapes.shape[1] != self.n_points_:
            raise ValueError(f"{what} have {shapes.shape[1]} points (array {shapes.shape}) but the model "
                             f"was fitted on {self.n_points_} points")
        transforms = None
        if self.align:
            transforms = [similarity_align(s, self.reference_) for s in shapes]
            shapes = np.stack([self._apply(s, *t) for s, t in zip(shapes, transforms)])
        return shapes, single, transforms

    def transform(self, shapes) -> np.ndarray:
        """Mode weights ``b = V^T (s - mean)`` (unclipped), shape (N, n_components_) or (n_components_,)."""
        shapes, single, _ = self._prepare(shapes, "shapes")
        b = (shapes.reshape(len(shapes), -1) - self.mean_.reshape(-1)) @ self.components_.T
        return b[0] if single else b

    def soften(self, shapes) -> np.ndarray:
        """Soft-landmarks: project, clip each ``b_i`` to ``+-clip*sqrt(lambda_i)``, reconstruct (same shape as input).

        With ``align`` the clip holds in each shape's own aligned frame (``transform`` of the result re-aligns
        the softened shape, so its weights may differ slightly).
        """
        shapes, single, transforms = self._prepare(shapes, "shapes")
        b = (shapes.reshape(len(shapes), -1) - self.mean_.reshape(-1)) @ self.components_.T
        if self.clip is not None:
            bound = self.clip * np.sqrt(self.eigenvalues_)
            b = np.clip(b, -bound, bound)
        out = (self.mean_.reshape(-1) + b @ self.components_).reshape(shapes.shape)
        if transforms is not None:
            out = np.stack([(o - t) @ r.T / s for o, (s, r, t) in zip(out, transforms)])
        return out[0] if single else out
