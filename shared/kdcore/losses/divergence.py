"""Forward and reverse KL between softened class distributions, and a fixed-weight balance of the two.

With ``p = softmax(teacher / T)`` and ``q = softmax(student / T)``:

* forward KL (Hinton KD), mean-covering: ``KL(p || q) = sum_c p_c (log p_c - log q_c)``
* reverse KL, mode-seeking:            ``KL(q || p) = sum_c q_c (log q_c - log p_c)``

Both are computed from ``log_softmax`` only (``F.kl_div(..., log_target=True)``), never ``log(softmax)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_loss
from ._validation import check_distill_inputs, check_non_negative, check_positive, compute_dtype

__all__ = ["forward_kl", "reverse_kl", "ReverseKLLoss", "BalancedDivergenceLoss"]


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.log_softmax(compute_dtype(logits) / temperature, dim=1)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-sample ``KL(softmax(t/T) || softmax(s/T))``, shape (B,), without the ``T^2`` factor."""
    log_q, log_p = _log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature)
    return F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(dim=1)


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-sample ``KL(softmax(s/T) || softmax(t/T))``, shape (B,), without the ``T^2`` factor."""
    log_q, log_p = _log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature)
    return F.kl_div(log_p, log_q, log_target=True, reduction="none").sum(dim=1)


@register_loss("reverse_kl")
class ReverseKLLoss(nn.Module):
    """Reverse KL distillation: ``T^2 * mean_i KL(softmax(s_i/T) || softmax(t_i/T))``.

    Distillation part only (no cross-entropy; wrap in :class:`WithHardLabel` to add it). Gradients flow into
    both logits; run the teacher under ``torch.no_grad()`` for offline distillation.

    Example:
        >>> s, t = torch.randn(4, 3), torch.randn(4, 3)
        >>> ReverseKLLoss(temperature=2.0)(s, t, torch.tensor([0, 1, 2, 0])).shape
        torch.Size([])
    """

    uses_teacher = True

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature")

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_distill_inputs(student_logits, teacher_logits, target)
        return self.temperature**2 * reverse_kl(student_logits, teacher_logits, self.temperature).mean()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


@register_loss("balanced_kl")
class BalancedDivergenceLoss(nn.Module):
    """Fixed-weight balance of forward and reverse KL (not BD-KD, whose balance is adaptive: see below).

    ``T^2 * mean_i [forward_weight * KL(p_i || q_i) + reverse_weight * KL(q_i || p_i)]`` with
    ``p = softmax(t/T)``, ``q = softmax(s/T)``.

    The weights are FIXED hyper-parameters, the same for every sample. BD-KD itself weights the two divergences
    per sample (from the networks' entropy gap) inside an online-distillation scheme: that is ``bdkd``
    (:class:`kdcore.losses.bdkd.BDKDLoss`), a separate loss; this one is not an alias of it.
    The defaults 0.5/0.5 make the loss the mean of the two divergences, on the same scale as the forward-KL term
    of :class:`KDLoss`.
    Distillation part only (no cross-entropy).
    """

    uses_teacher = True

    def __init__(self, temperature: float = 4.0, forward_weight: float = 0.5, reverse_weight: float = 0.5) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature")
        self.forward_weight = check_non_negative(forward_weight, "forward_weight")
        self.reverse_weight = check_non_negative(reverse_weight, "reverse_weight")

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_distill_inputs(student_logits, teacher_logits, target)
        log_q = _log_probs(student_logits, self.temperature)
        log_p = _log_probs(teacher_logits, self.temperature)
        fwd = F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(dim=1)
        rev = F.kl_div(log_p, log_q, log_target=True, reduction="none").sum(dim=1)
        return self.temperature**2 * (self.forward_weight * fwd + self.reverse_weight * rev).mean()

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, forward_weight={self.forward_weight}, "
                f"reverse_weight={self.reverse_weight}")
