"""Per-class weights for imbalanced data: scikit-learn's "balanced" rule and a checked tensor form."""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight

__all__ = ["balanced_class_weights", "as_class_weights", "ClassWeights"]

ClassWeights = Union[Sequence[float], np.ndarray, torch.Tensor]


def balanced_class_weights(labels: Sequence[int] | np.ndarray | torch.Tensor, n_classes: int) -> np.ndarray:
    """``w_c = n_samples / (n_classes * count_c)`` (scikit-learn's ``class_weight="balanced"``), float64 (C,).

    Raises:
        ValueError: labels not 1-D integers in ``[0, n_classes)``, or a class without any sample (its weight
            would be infinite); the message gives the count of every class.

    Example:
        >>> balanced_class_weights([0, 0, 0, 1], 2).tolist()
        [0.6666666666666666, 2.0]
    """
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels)
    if int(n_classes) != n_classes or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    n_classes = int(n_classes)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D sequence of class indices, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must be in [0, {n_classes}), got values in [{y.min()}, {y.max()}]")
    counts = np.bincount(y, minlength=n_classes)
    empty = np.flatnonzero(counts == 0).tolist()
    if empty:
        raise ValueError(f"cannot compute balanced class weights: class(es) {empty} have no samples "
                         f"(counts per class: {counts.tolist()})")
    return compute_class_weight("balanced", classes=np.arange(n_classes), y=y).astype(np.float64)


def as_class_weights(weights: ClassWeights | None) -> torch.Tensor | None:
    """A 1-D float32 tensor of finite, non-negative weights (or None), from a list, tuple, array or tensor."""
    if weights is None:
        return None
    if isinstance(weights, torch.Tensor):
        tensor = weights.detach().to(dtype=torch.float32).clone()
    else:
        tensor = torch.as_tensor(np.asarray(weights, dtype=np.float64), dtype=torch.float32)
    if tensor.ndim != 1 or tensor.numel() == 0:
        raise ValueError(f"class_weights must be a non-empty 1-D sequence (one weight per class), "
                         f"got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all() or (tensor < 0).any():
        raise ValueError(f"class_weights must be finite and >= 0, got {tensor.tolist()}")
    return tensor
