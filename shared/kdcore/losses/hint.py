"""FitNets hints (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015): match a teacher feature
through a learned regressor on the student's."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..features import POOLED, Projector
from ._registry import register_loss
from ._validation import compute_dtype

__all__ = ["HintLoss"]


@register_loss("hint")
class HintLoss(nn.Module):
    """``loss = mean((r(s) - t)^2)``: mean squared error between the projected student feature ``r(s)`` and the
    teacher feature ``t`` (torchdistill's ``MSELoss`` form; the paper's ``1/2 ||t - r(s)||^2`` up to scale).

    ``r`` is :class:`kdcore.features.Projector` (linear for (B, D) embeddings, 1x1 conv for (B, C, H, W) maps),
    created by :meth:`bind` from the two shapes and trained with the student; it is part of the loss, so the
    exported student does not carry it. Call ``loss(student_feature, teacher_feature, target)`` (target unused).

    Example:
        >>> loss = HintLoss().bind((2, 4), (2, 6))
        >>> loss(torch.randn(2, 4), torch.randn(2, 6), None).shape
        torch.Size([])
    """

    uses_teacher = False
    uses_feature = True
    needs_teacher_features = True
    feature_path = POOLED

    def __init__(self) -> None:
        super().__init__()
        self.projector: Projector | None = None

    def bind(self, student_shape: Any, teacher_shape: Any) -> "HintLoss":
        """Create the regressor for features of these shapes."""
        self.projector = Projector.for_shapes(student_shape, teacher_shape)
        return self

    def forward(self, student_feature: torch.Tensor, teacher_feature: torch.Tensor,
                target: torch.Tensor | None = None) -> torch.Tensor:
        if self.projector is None:
            raise RuntimeError("HintLoss.bind(student_shape, teacher_shape) must be called before the first batch")
        projected = self.projector(student_feature.to(next(self.projector.parameters()).dtype))
        if projected.shape != teacher_feature.shape:
            raise ValueError(f"projected student feature {tuple(projected.shape)} does not match the teacher "
                             f"feature {tuple(teacher_feature.shape)}")
        return F.mse_loss(compute_dtype(projected), compute_dtype(teacher_feature).to(compute_dtype(projected).dtype))
