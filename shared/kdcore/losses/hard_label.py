"""Hard-label losses: plain (optionally class-weighted) cross-entropy, and CE mixed into any distillation loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_loss
from ._validation import (Reduction, check_distill_inputs, check_fraction, check_logits, check_reduction,
                          check_target, compute_dtype)
from .class_weights import ClassWeights, as_class_weights

__all__ = ["CrossEntropyLoss", "WithHardLabel"]


@register_loss("ce")
class CrossEntropyLoss(nn.Module):
    """``F.cross_entropy(logits, target, weight=class_weights)``, called ``(logits, target)`` like FocalLoss.

    ``"mean"`` divides by ``sum_i w[y_i]`` (torch's rule). ``class_weights`` may be a list, tuple, array or
    tensor, kept as a buffer. Half-precision logits are upcast to float32.
    """

    uses_teacher = False
    class_weights: torch.Tensor | None

    def __init__(self, class_weights: ClassWeights | None = None, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.register_buffer("class_weights", as_class_weights(class_weights))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits(logits)
        check_target(target, logits)
        x = compute_dtype(logits)
        weight = None
        if self.class_weights is not None:
            if self.class_weights.numel() != x.shape[1]:
                raise ValueError(f"class_weights has {self.class_weights.numel()} entries but logits "
                                 f"{tuple(x.shape)} have {x.shape[1]} classes")
            weight = self.class_weights.to(device=x.device, dtype=x.dtype)
        return F.cross_entropy(x, target, weight=weight, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class WithHardLabel(nn.Module):
    """``alpha * CE(s, y) + (1 - alpha) * distill(s, t, y)``: adds the label term to a distillation-only loss.

    ``WithHardLabel(DKDLoss(), alpha)`` etc.; ``WithHardLabel(KDLoss(alpha=0), a)`` equals ``KDLoss(alpha=a)``.

    Example:
        >>> from kdcore.losses import KDLoss
        >>> s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
        >>> bool(torch.isclose(WithHardLabel(KDLoss(alpha=0.0), 0.3)(s, t, y), KDLoss(alpha=0.3)(s, t, y)))
        True
    """

    uses_teacher = True

    def __init__(self, distill: nn.Module, alpha: float) -> None:
        super().__init__()
        if not isinstance(distill, nn.Module):
            raise TypeError(f"distill must be an nn.Module loss called (student, teacher, target), "
                            f"got {type(distill).__name__}")
        if getattr(distill, "uses_teacher", True) is False:
            raise TypeError(f"distill must be a distillation loss called (student, teacher, target); "
                            f"{type(distill).__name__} is called (logits, target)")
        self.distill = distill
        self.alpha = check_fraction(alpha, "alpha")

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_distill_inputs(student_logits, teacher_logits, target)
        ce = F.cross_entropy(compute_dtype(student_logits), target)
        return self.alpha * ce + (1.0 - self.alpha) * self.distill(student_logits, teacher_logits, target)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
