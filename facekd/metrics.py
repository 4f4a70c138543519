"""Landmark metrics: normalised mean error (NME), failure rate, CED curve and its exact AUC.

All errors are fractions of the normaliser (0.05 means 5 %), never percent.

Example:
    >>> import numpy as np
    >>> auc([0.0, 0.25, 1.0], threshold=0.5)  # (1 + 0.5 + 0) / 3
    0.5
    >>> failure_rate([0.0, 0.1, 0.2], threshold=0.1)  # only 0.2 is > 0.1
    0.3333333333333333
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from facekd.schemes import get_scheme

__all__ = ["nme", "point_errors", "per_landmark_error", "normaliser", "failure_rate", "auc", "ced_curve"]

Norm = str | float | Sequence[float] | np.ndarray


def _to_numpy(x, what: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensors without importing torch here
        x = x.detach().cpu().numpy()
    array = np.asarray(x, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contains non-finite values")
    return array


def _landmark_pair(pred, gt) -> tuple[np.ndarray, np.ndarray, bool]:
    pred, gt = _to_numpy(pred, "pred"), _to_numpy(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same shape, got {pred.shape} and {gt.shape}")
    single = pred.ndim == 2
    if single:
        pred, gt = pred[None], gt[None]
    if pred.ndim != 3 or pred.shape[2] != 2 or pred.shape[1] == 0:
        raise ValueError(f"landmarks must be (N, K, 2) or (K, 2), got {pred.shape[1:] if single else pred.shape}")
    return pred, gt, single


def normaliser(gt, norm: Norm = "inter_ocular", eye_indices: tuple[int, int] | None = None,
               pupil_groups: tuple[Sequence[int], Sequence[int]] | None = None) -> np.ndarray:
    """Per-image normaliser (N,) computed from ground truth (N, K, 2) or (K, 2); ``norm`` as in :func:`nme`."""
    gt = _to_numpy(gt, "gt")
    if gt.ndim == 2:
        gt = gt[None]
    if gt.ndim != 3 or gt.shape[2] != 2:
        raise ValueError(f"gt must be (N, K, 2) or (K, 2), got {gt.shape}")
    n_points = gt.shape[1]
    if isinstance(norm, str):
        if norm == "inter_ocular":
            pair = eye_indices if eye_indices is not None else get_scheme(n_points).outer_eye_corners
            _check_indices(pair, n_points, "eye_indices")
            value = np.linalg.norm(gt[:, pair[0]] - gt[:, pair[1]], axis=-1)
        elif norm == "inter_pupil":
            groups = pupil_groups if pupil_groups is not None else get_scheme(n_points).pupils
            for group in groups:
                _check_indices(group, n_points, "pupil_groups")
            left, right = (gt[:, list(group)].mean(axis=1) for group in groups)
            value = np.linalg.norm(left - right, axis=-1)
        elif norm == "bbox":
            size = gt.max(axis=1) - gt.min(axis=1)
            value = np.sqrt(size[:, 0] * size[:, 1])
        else:
            raise ValueError(f"unknown norm {norm!r}: use 'inter_ocular', 'inter_pupil', 'bbox' or numbers")
    else:
        value = _to_numpy(norm, "norm")
        if value.ndim == 0:
            value = np.full(len(gt), float(value))
        if value.shape != (len(gt),):
            raise ValueError(f"norm must be a number or one value per image ({len(gt)}), got shape {value.shape}")
    bad = np.flatnonzero(~(value > 0))
    if bad.size:
        raise ValueError(f"normaliser ({norm if isinstance(norm, str) else 'given'}) is not positive for "
                         f"image {int(bad[0])} (value {value[bad[0]]}); {bad.size} image(s) affected")
    return value


def _check_indices(indices: Sequence[int], n_points: int, what: str) -> None:
    if len(indices) == 0 or not all(-n_points <= int(i) < n_points for i in indices):
        raise ValueError(f"{what} {tuple(indices)} out of range for {n_points} landmarks")


def point_errors(pred, gt, norm: Norm = "inter_ocular", eye_indices: tuple[int, int] | None = None,
                 pupil_groups: tuple[Sequence[int], Sequence[int]] | None = None) -> np.ndarray:
    """Normalised Euclidean error of every point, (N, K) (or (K,) for a single (K, 2) shape)."""
    pred, gt, single = _landmark_pair(pred, gt)
    errors = np.linalg.norm(pred - gt, axis=-1) / normaliser(gt, norm, eye_indices, pupil_groups)[:, None]
    return errors[0] if single else errors


def nme(pred, gt, norm: Norm = "inter_ocular", eye_indices: tuple[int, int] | None = None,
        pupil_groups: tuple[Sequence[int], Sequence[int]] | None = None) -> np.ndarray | float:
    """Per-image normalised mean error: mean over points of the Euclidean error, over the normaliser.

    Args:
        pred, gt: (N, K, 2) or (K, 2) arrays, lists or tensors in the same pixel frame.
        norm: "inter_ocular" (outer eye corners, ``get_scheme(K).outer_eye_corners``: 68 -> 36, 45),
            "inter_pupil" (distance of the means of ``get_scheme(K).pupils``), "bbox" (sqrt(w*h) of the
            ground-truth landmark box), or a number / (N,) array of normalisers.
        eye_indices: the two outer eye corners, overriding the scheme (e.g. (60, 72) for 98, (8, 9) for 29).
        pupil_groups: the two point groups whose means are the pupils, overriding the scheme.

    Returns:
        (N,) float64 fractions, or a float for a single (K, 2) shape.
    """
    errors = point_errors(pred, gt, norm, eye_indices, pupil_groups)
    return float(errors.mean()) if errors.ndim == 1 else errors.mean(axis=1)


def per_landmark_error(pred, gt, norm: Norm = "inter_ocular", eye_indices: tuple[int, int] | None = None,
                       pupil_groups: tuple[Sequence[int], Sequence[int]] | None = None) -> np.ndarray:
    """Mean normalised error of each landmark over the images, (K,)."""
    errors = point_errors(pred, gt, norm, eye_indices, pupil_groups)
    return errors if errors.ndim == 1 else errors.mean(axis=0)


def _nmes(nmes, threshold: float) -> np.ndarray:
    values = _to_numpy(nmes, "nmes")
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"nmes must be a non-empty 1-D sequence of per-image errors, got shape {values.shape}")
    if (values < 0).any():
        raise ValueError(f"nmes must be >= 0, got minimum {values.min()}")
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    return values


def failure_rate(nmes, threshold: float = 0.1) -> float:
    """Fraction of images whose NME is strictly greater than ``threshold`` (FR@0.1 as in WFLW/300W papers)."""
    return float(np.mean(_nmes(nmes, threshold) > threshold))


def ced_curve(nmes, threshold: float = 0.1, n_points: int = 1001) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution for plotting: ``x = linspace(0, threshold, n_points)``, ``y = P(nme <= x)``."""
    values = np.sort(_nmes(nmes, threshold))
    if n_points < 2:
        raise ValueError(f"n_points must be >= 2, got {n_points}")
    x = np.linspace(0.0, threshold, n_points)
    return x, np.searchsorted(values, x, side="right") / values.size


def auc(nmes, threshold: float = 0.1, step: float | None = None) -> float:
    """Area under the CED curve on [0, threshold], divided by ``threshold`` (1.0 = every NME is 0).

    Exact by default: with ``CED(x) = (1/N) sum_i [nme_i <= x]``,
    ``int_0^T CED(x) dx = (1/N) sum_i int_0^T [x >= nme_i] dx = (1/N) sum_i max(0, T - nme_i)`` (as nme_i >= 0),
    so ``AUC = mean_i max(0, T - nme_i) / T``. No grid, no discretisation error.

    Args:
        step: when given, the common grid approximation instead (trapezoid rule on ``CED`` sampled at
            ``0, step, ..., threshold``), for comparison with tables computed that way; error is O(step).
    """
    values = _nmes(nmes, threshold)
    if step is None:
        return float(np.mean(np.maximum(0.0, 1.0 - values / threshold)))
    if not 0 < step <= threshold:
        raise ValueError(f"step must be in (0, threshold={threshold}], got {step}")
    n_points = int(round(threshold / step)) + 1
    x, y = ced_curve(values, threshold, n_points)
    return float(np.trapezoid(y, x) / threshold)
