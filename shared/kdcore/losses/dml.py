"""Deep mutual learning (Zhang et al., "Deep Mutual Learning", CVPR 2018): the mimicry term of one network of
an online pair."""

from __future__ import annotations

import torch
from torch import nn

from ._registry import register_loss
from ._validation import check_distill_inputs, check_positive
from .divergence import forward_kl

__all__ = ["DMLLoss"]


@register_loss("dml")
class DMLLoss(nn.Module):
    """``loss = T^2 * (1/B) sum_i KL(p2_i || p1_i)`` with ``p1 = softmax(logits/T)`` of the network being trained
    and ``p2 = softmax(peer/T)`` of its peer, DETACHED: each network learns from the other's current
    predictions, never pushes the peer (the paper's ``L_1 = L_C1 + D_KL(p2 || p1)``, T = 1).

    In an online pair (:mod:`kdcore.online`) the student calls it ``(student, teacher, y)`` and the teacher
    ``(teacher, student, y)``; label cross-entropy is the objective's, not part of this term. ``online_only``:
    a frozen teacher makes it plain KD.

    Example:
        >>> s = torch.randn(4, 3, requires_grad=True); peer = torch.randn(4, 3, requires_grad=True)
        >>> DMLLoss()(s, peer, torch.tensor([0, 1, 2, 0])).backward(); peer.grad is None
        True
    """

    uses_teacher = True
    online_only = True

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature")

    def forward(self, logits: torch.Tensor, peer_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_distill_inputs(logits, peer_logits, target)
        return self.temperature**2 * forward_kl(logits, peer_logits.detach(), self.temperature).mean()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
