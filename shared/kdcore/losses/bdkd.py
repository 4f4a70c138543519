"""BD-KD (Amara et al., "BD-KD: Balancing the Divergences for Online Knowledge Distillation", arXiv 2212.12965):
the student's distillation term weighs forward and reverse KL per sample, from the entropy gap between the
student's and the teacher's predictions; the teacher is regularised by a reverse KL towards the student.

CAUTION (what was checkable here): no official code exists, and only the paper's abstract and a summary were
readable in this environment, not its method section. Both state the structure reproduced below (sample-wise
forward/reverse KL chosen by the teacher-student entropy gap for the student; reverse KL for the teacher); the
exact gating rule (which divergence when the student is the more uncertain one) and the weights are this
package's reading, to be checked against the paper's equations before any result is attributed to BD-KD.
It differs from ``balanced_kl`` (:class:`~kdcore.losses.divergence.BalancedDivergenceLoss`), whose weights are
fixed and the same for every sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_loss
from ._validation import check_distill_inputs, check_non_negative, check_positive, compute_dtype
from .divergence import forward_kl, reverse_kl

__all__ = ["BDKDLoss", "entropy"]


def entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-sample Shannon entropy (nats) of ``softmax(logits / T)``, shape (B,)."""
    log_p = F.log_softmax(compute_dtype(logits) / temperature, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


@register_loss("bdkd")
class BDKDLoss(nn.Module):
    """Per-sample choice of divergence by the entropy gap, ``p = softmax(t/T)`` (teacher), ``q = softmax(s/T)``:

    ``loss = T^2 * (1/B) sum_i [ forward_weight * KL(p_i || q_i)   if H(q_i) <= H(p_i)``
    ``                           reverse_weight * KL(q_i || p_i)   if H(q_i) >  H(p_i) ]``

    A student at least as confident as the teacher on a sample gets the mean-covering forward KL (which spreads
    its mass: calibration); a less confident one the mode-seeking reverse KL (which sharpens it onto the
    teacher's mode). The gate is computed without gradient. :meth:`teacher_term` is the teacher's regulariser
    in the online pair, ``T^2 * mean_i KL(p_i || q_i)`` with the student detached (reverse KL seen from the
    teacher, which learns towards the student). See the module note: the rule is reconstructed, not verified.

    Example:
        >>> s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
        >>> BDKDLoss()(s, t, y).shape
        torch.Size([])
    """

    uses_teacher = True
    online_only = True

    def __init__(self, temperature: float = 1.0, forward_weight: float = 1.0, reverse_weight: float = 1.0) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature")
        self.forward_weight = check_non_negative(forward_weight, "forward_weight")
        self.reverse_weight = check_non_negative(reverse_weight, "reverse_weight")

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_distill_inputs(student_logits, teacher_logits, target)
        temp = self.temperature
        fwd = forward_kl(student_logits, teacher_logits, temp)
        rev = reverse_kl(student_logits, teacher_logits, temp)
        with torch.no_grad():
            student_less_sure = entropy(student_logits, temp) > entropy(teacher_logits, temp)
        per_sample = torch.where(student_less_sure, self.reverse_weight * rev, self.forward_weight * fwd)
        return temp**2 * per_sample.mean()

    def teacher_term(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                     target: torch.Tensor) -> torch.Tensor:
        """The teacher's distillation regulariser, ``T^2 * mean_i KL(softmax(t_i/T) || softmax(s_i/T))``,
        student detached (gradients reach the teacher only)."""
        check_distill_inputs(student_logits, teacher_logits, target)
        # KL(p_t || p_s) with the student detached is forward_kl read from the student's side
        return self.temperature**2 * forward_kl(student_logits.detach(), teacher_logits, self.temperature).mean()

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, forward_weight={self.forward_weight}, "
                f"reverse_weight={self.reverse_weight}")
