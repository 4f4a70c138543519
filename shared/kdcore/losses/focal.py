"""Multi-class focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017) with class weights.

Written here rather than wrapping ``monai.losses.FocalLoss`` (MONAI 1.6.1), whose semantics do not fit
(B, C) classification logits:

* ``reduction="mean"`` divides by ``B * C`` (the loss lives on the one-hot (B, C) grid), not by the summed
  weights of the labels, so with ``gamma=0`` it is ``F.cross_entropy / C`` (unweighted), not ``F.cross_entropy``;
* ``reduction="sum"`` first averages over the spatial dims, which for (B, C) input (none) means over every
  element again, so it also returns ``sum / (B * C)``;
* it forms ``1 - exp(log_softmax)``, whose gradient is NaN for ``0 < gamma < 1`` once ``p_t`` rounds to 1.

Here ``p_t`` is the true-class softmax probability (not ``exp(-CE)`` of a weighted cross-entropy, which mixes
the class weight into the focusing term), ``1 - p_t`` is ``-expm1(log p_t)`` without cancellation, and
``reduction="mean"`` normalises like ``F.cross_entropy(weight=...)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_loss
from ._validation import Reduction, check_logits, check_non_negative, check_reduction, check_target, compute_dtype
from .class_weights import ClassWeights, as_class_weights

__all__ = ["FocalLoss"]


def _weights_for(class_weights: torch.Tensor | None, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """``w[y_i]`` per sample, shape (B,), in the logits' dtype; checks one weight per class."""
    if class_weights is None:
        return None
    if class_weights.numel() != logits.shape[1]:
        raise ValueError(f"class_weights has {class_weights.numel()} entries but logits {tuple(logits.shape)} "
                         f"have {logits.shape[1]} classes")
    return class_weights.to(device=logits.device, dtype=logits.dtype)[target]


def _reduce(per_sample: torch.Tensor, sample_weights: torch.Tensor | None, reduction: str,
            normalize: str = "weights") -> torch.Tensor:
    """``mean`` divides by the summed sample weights (``normalize="weights"``, as ``F.cross_entropy`` does)
    or by B (``"batch"``, or without weights)."""
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    if sample_weights is not None and normalize == "weights":
        return per_sample.sum() / sample_weights.sum()
    return per_sample.mean()


@register_loss("focal")
class FocalLoss(nn.Module):
    """``loss_i = -w[y_i] * (1 - p_t)^gamma * log p_t``, ``p_t = softmax(logits_i)[y_i]``; called ``(logits, target)``.

    ``reduction="mean"`` returns ``sum_i loss_i / sum_i w[y_i]`` (plain mean without weights), so ``gamma=0``
    equals ``F.cross_entropy(logits, target, weight=class_weights)``; like it, a batch whose classes all have
    weight 0 gives NaN. With ``normalize="batch"`` it returns ``sum_i loss_i / B`` instead, as KD-OCT's code
    does (``focal_loss.mean()``). ``"sum"`` sums, ``"none"`` returns the (B,) per-sample losses.

    Args:
        gamma: focusing exponent >= 0 (0 gives cross-entropy).
        class_weights: one non-negative weight per class (list, tuple, array or tensor); kept as a buffer, so it
            follows ``.to(device)`` and is saved in ``state_dict``.
        reduction: "mean", "sum" or "none".
        normalize: what ``"mean"`` divides by with class weights: ``"weights"`` (their sum over the batch) or
            ``"batch"`` (B).

    Example:
        >>> logits, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
        >>> w = [1.0, 2.0, 0.5, 1.0]
        >>> bool(torch.allclose(FocalLoss(gamma=0, class_weights=w)(logits, y),
        ...                     F.cross_entropy(logits, y, weight=torch.tensor(w))))
        True
    """

    uses_teacher = False
    class_weights: torch.Tensor | None

    def __init__(self, gamma: float = 2.0, class_weights: ClassWeights | None = None,
                 reduction: Reduction = "mean", normalize: str = "weights") -> None:
        super().__init__()
        self.gamma = check_non_negative(gamma, "gamma")
        self.reduction = check_reduction(reduction)
        if normalize not in ("weights", "batch"):
            raise ValueError(f"normalize must be 'weights' or 'batch', got {normalize!r}")
        self.normalize = normalize
        self.register_buffer("class_weights", as_class_weights(class_weights))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits(logits)
        check_target(target, logits)
        x = compute_dtype(logits)
        log_pt = F.log_softmax(x, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
        # clamp: d/du u^gamma is infinite at u = 0 for gamma < 1; the clamped value changes nothing since
        # u == 0 only where log_pt == 0
        one_minus_pt = (-torch.expm1(log_pt)).clamp_min(torch.finfo(x.dtype).tiny)
        per_sample = -(one_minus_pt**self.gamma) * log_pt
        weights = _weights_for(self.class_weights, x, target)
        if weights is not None:
            per_sample = weights * per_sample
        return _reduce(per_sample, weights, self.reduction, self.normalize)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, reduction={self.reduction!r}, normalize={self.normalize!r}"
