"""Normalized KD (Yang et al., "From Knowledge Distillation to Self-Knowledge Distillation: A Unified Approach
with Normalized Loss and Customized Soft Labels", ICCV 2023), distillation part only.

Matches the official ``NKDLoss`` of github.com/yzd-v/cls_KD (``mmcls/models/dis_losses/nkd.py``; an earlier
copy under ``mmcls/distillation/losses`` had a mask bug that kept the target class in the non-target term).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_loss
from ._validation import check_distill_inputs, check_non_negative, check_positive, compute_dtype, non_target_logits

__all__ = ["NKDLoss"]


@register_loss("nkd")
class NKDLoss(nn.Module):
    """Target term at ``T = 1`` plus a cross-entropy between the normalised non-target distributions.

    ``loss = (1/B) sum_i [ -p_{i,y} log q_{i,y}  -  gamma * T^2 * sum_{c != y} P_{i,c} log Q_{i,c} ]``

    with ``p = softmax(t)``, ``q = softmax(s)`` at temperature 1, and ``P = softmax(t_{-y} / T)``,
    ``Q = softmax(s_{-y} / T)`` the teacher and student distributions over the ``C - 1`` non-target classes
    (softmax of the non-target logits = non-target probabilities renormalised to sum to 1).

    As in the official code the teacher's target probability ``p_{i,y}`` is detached; the non-target teacher
    term is not (irrelevant when the teacher runs under ``torch.no_grad()``). Both terms are cross-entropies,
    not divergences: the loss is not zero when student equals teacher.

    Example:
        >>> s, t, y = torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1])
        >>> round(float(NKDLoss(gamma=1.0)(s, t, y)), 4)  # 1/3 * log 3 + log 2
        1.0594
    """

    uses_teacher = True

    def __init__(self, temperature: float = 1.0, gamma: float = 1.5) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature")
        self.gamma = check_non_negative(gamma, "gamma")

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_distill_inputs(student_logits, teacher_logits, target, min_classes=2)
        s, t, temp = compute_dtype(student_logits), compute_dtype(teacher_logits), self.temperature
        index = target.unsqueeze(1)
        log_q_target = F.log_softmax(s, dim=1).gather(1, index).squeeze(1)
        p_target = F.softmax(t, dim=1).gather(1, index).squeeze(1).detach()
        target_term = -(p_target * log_q_target)
        log_q_rest = F.log_softmax(non_target_logits(s, target) / temp, dim=1)
        p_rest = F.softmax(non_target_logits(t, target) / temp, dim=1)
        non_target_term = -(p_rest * log_q_rest).sum(dim=1)
        return (target_term + self.gamma * temp**2 * non_target_term).mean()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gamma={self.gamma}"
