"""Decoupled knowledge distillation (Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022).

At temperature ``T`` let ``p = softmax(t/T)``, ``q = softmax(s/T)`` and ``y`` the label. Classic KD splits as

    ``KL(p || q) = TCKD + (1 - p_y) * NCKD``

* TCKD (target class): KL between the binary distributions ``b^p = [p_y, 1 - p_y]`` and ``b^q = [q_y, 1 - q_y]``.
* NCKD (non-target classes): KL between ``p`` and ``q`` renormalised over the ``C - 1`` non-target classes, i.e.
  ``softmax`` of the non-target logits only.

Everything stays in log space: ``log(1 - p_y) = logsumexp(non-target t/T) - logsumexp(t/T)``, and the non-target
distributions are a ``log_softmax`` over the ``C - 1`` remaining columns. The official code instead subtracts
1000 from the target logit and takes ``log(softmax)`` of the binary split, which loses digits (or gives
``-inf``) for confident logits; the values agree otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_loss
from ._validation import check_distill_inputs, check_non_negative, check_positive, compute_dtype, non_target_logits

__all__ = ["dkd_terms", "DKDLoss"]


def _binary_log_probs(logits: torch.Tensor, target: torch.Tensor, non_target: torch.Tensor) -> torch.Tensor:
    """``[log p_y, log(1 - p_y)]`` per row, shape (B, 2), from (already temperature-scaled) logits."""
    log_norm = torch.logsumexp(logits, dim=1)
    log_target = logits.gather(1, target.unsqueeze(1)).squeeze(1) - log_norm
    log_rest = torch.logsumexp(non_target, dim=1) - log_norm
    return torch.stack([log_target, log_rest], dim=1)


def dkd_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
              temperature: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(tckd, nckd)``, each of shape (B,), UNSCALED (no ``T^2`` factor, no batch mean).

    With ``kd_i = KL(softmax(t_i/T) || softmax(s_i/T))`` they satisfy ``kd_i = tckd_i + (1 - p_y) * nckd_i``
    where ``p_y`` is the teacher's target probability at temperature ``T``.
    """
    check_distill_inputs(student_logits, teacher_logits, target, min_classes=2)
    temperature = check_positive(temperature, "temperature")
    s = compute_dtype(student_logits) / temperature
    t = compute_dtype(teacher_logits) / temperature
    s_rest, t_rest = non_target_logits(s, target), non_target_logits(t, target)
    tckd = F.kl_div(_binary_log_probs(s, target, s_rest), _binary_log_probs(t, target, t_rest), log_target=True,
                    reduction="none").sum(dim=1)
    nckd = F.kl_div(F.log_softmax(s_rest, dim=1), F.log_softmax(t_rest, dim=1), log_target=True,
                    reduction="none").sum(dim=1)
    return tckd, nckd


@register_loss("dkd")
class DKDLoss(nn.Module):
    """Decoupled KD, distillation part only (no cross-entropy; wrap in :class:`WithHardLabel` to add it).

    ``loss = T^2 * (1/B) sum_i (alpha * TCKD_i + beta * NCKD_i)`` (see :func:`dkd_terms`). Defaults are the
    paper's CIFAR-100 setting (alpha 1, beta 8, T 4). The paper's linear warm-up of the whole loss over the first
    20 epochs is a schedule, applied by the student objective (``student.kd_warmup_epochs``, see
    :mod:`kdcore.objective`, which defaults to 20 for ``dkd``).

    Example:
        >>> s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
        >>> bool(DKDLoss()(s, t, y) >= 0)
        True
    """

    uses_teacher = True

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> None:
        super().__init__()
        self.alpha = check_non_negative(alpha, "alpha")
        self.beta = check_non_negative(beta, "beta")
        self.temperature = check_positive(temperature, "temperature")

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        tckd, nckd = dkd_terms(student_logits, teacher_logits, target, self.temperature)
        return self.temperature**2 * (self.alpha * tckd + self.beta * nckd).mean()

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}"
