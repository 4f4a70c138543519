"""Hinton's knowledge distillation loss, exactly as KD-OCT uses it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_loss
from ._validation import check_distill_inputs, check_fraction, check_positive, compute_dtype

__all__ = ["KDLoss"]


@register_loss("kd")
class KDLoss(nn.Module):
    """Cross-entropy on the labels plus temperature-softened forward KL to the teacher.

    ``loss = alpha * CE(s, y) + (1 - alpha) * T^2 * (1/B) sum_i KL(softmax(t_i/T) || softmax(s_i/T))``

    i.e. ``F.kl_div(log_softmax(s/T), log_softmax(t/T), log_target=True, reduction="batchmean")``. The ``T^2``
    keeps the soft-target gradients on the scale of the hard-label ones (Hinton et al. 2015).

    Example:
        >>> s, t, y = torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 2])
        >>> round(float(KDLoss(alpha=1.0)(s, t, y)), 4)  # CE of a uniform guess over 3 classes = log 3
        1.0986
    """

    uses_teacher = True

    def __init__(self, temperature: float = 4.0, alpha: float = 0.3) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature")
        self.alpha = check_fraction(alpha, "alpha")

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_distill_inputs(student_logits, teacher_logits, target)
        s, t, temp = compute_dtype(student_logits), compute_dtype(teacher_logits), self.temperature
        kl = F.kl_div(F.log_softmax(s / temp, dim=1), F.log_softmax(t / temp, dim=1), log_target=True,
                      reduction="batchmean")
        return self.alpha * F.cross_entropy(s, target) + (1.0 - self.alpha) * temp**2 * kl

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"
