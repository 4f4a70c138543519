"""USKD (Yang et al., "From Knowledge Distillation to Self-Knowledge Distillation: A Unified Approach with
Normalized Loss and Customized Soft Labels", ICCV 2023): self-distillation without a teacher.

Matches ``USKDLoss`` of github.com/yzd-v/cls_KD (``mmcls/models/dis_losses/uskd.py``) for hard labels, with
the authors' defaults ``alpha=1.0, beta=0.1, mu=0.005``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..features import PENULTIMATE_STAGE, pool_feature
from ._registry import register_loss
from ._validation import check_logits, check_non_negative, check_target, compute_dtype, non_target_logits

__all__ = ["USKDLoss"]


@register_loss("uskd")
class USKDLoss(nn.Module):
    """Target term with a customised soft label, Zipf soft labels for the non-target classes, and a weak
    classifier on an intermediate feature.

    ``loss = alpha * L_t + beta * L_nt + mu * L_weak`` with, for ``p = softmax(s)`` and label ``y``:

    * ``L_t = -(1/B) sum_i (1 + p_iy^2 - mean_j p_jy^2) log p_iy`` (the soft target label is detached);
    * ``L_weak = -(1/B) sum_i sum_c (0.9 [c = y] + 0.1 / C) log w_ic``, ``w = softmax(fc(feature))``: a linear
      "weak" classifier on the pooled intermediate feature, trained with the student;
    * ``L_nt = -(1/B) sum_i sum_{c != y} z_ic log softmax(s_{i,-y})_c``: ``z`` is Zipf's law ``1 / rank``
      (renormalised over the non-target classes, detached), the rank of class c being that of
      ``w_c / (1 - w_y) + log p_c / (1 - log p_y)`` (the authors' code ranks on log-probabilities; kept).

    Call ``loss(student_logits, target, feature)`` with (B, C) logits, (B,) labels and the student's
    intermediate feature, (B, D) or (B, D, H, W) (pooled by averaging). ``uses_teacher`` is False: no teacher
    is needed. ``uses_feature`` is True: the student must expose ``feature`` (``feature_path``: by default the
    penultimate stage, as the authors' distiller, ``neck(stage[-2])``). The label cross-entropy is the
    objective's (the authors keep the head's loss beside USKD: weights 1 : 1). The weak classifier is created
    by :meth:`bind` from the feature width and the number of classes before training; it is part of the loss,
    not of the student.

    Example:
        >>> loss = USKDLoss().bind(in_features=8, num_classes=3)
        >>> s, y, f = torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), torch.randn(4, 8)
        >>> loss(s, y, f).shape
        torch.Size([])
    """

    uses_teacher = False
    uses_feature = True
    needs_teacher_features = False
    feature_path = PENULTIMATE_STAGE  # the authors' fea_mid: the pooled output of the penultimate stage

    def __init__(self, alpha: float = 1.0, beta: float = 0.1, mu: float = 0.005) -> None:
        super().__init__()
        self.alpha = check_non_negative(alpha, "alpha")
        self.beta = check_non_negative(beta, "beta")
        self.mu = check_non_negative(mu, "mu")
        self.fc: nn.Linear | None = None

    def bind(self, in_features: int, num_classes: int) -> "USKDLoss":
        """Create the weak classifier for a feature of width ``in_features`` and ``num_classes`` classes."""
        if int(num_classes) < 2:
            raise ValueError(f"USKD needs at least 2 classes, got {num_classes}")
        self.fc = nn.Linear(int(in_features), int(num_classes))
        return self

    def forward(self, student_logits: torch.Tensor, target: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        check_logits(student_logits, "student_logits")
        check_target(target, student_logits, "student_logits")
        if self.fc is None:
            raise RuntimeError("USKDLoss.bind(in_features, num_classes) must be called before the first batch")
        s = compute_dtype(student_logits)
        n_classes = s.shape[1]
        if n_classes != self.fc.out_features:
            raise ValueError(f"student_logits have {n_classes} classes, the weak classifier {self.fc.out_features}")
        feature = pool_feature(feature)
        index = target.unsqueeze(1)
        log_p = F.log_softmax(s, dim=1)
        log_p_target = log_p.gather(1, index).squeeze(1)
        p_target_sq = log_p_target.detach().exp() ** 2
        soft_target = 1.0 + p_target_sq - p_target_sq.mean()
        target_term = -(soft_target * log_p_target).mean()

        log_w = F.log_softmax(compute_dtype(self.fc(feature.to(self.fc.weight.dtype))), dim=1)
        smoothed = F.one_hot(target, n_classes).to(log_w.dtype) * 0.9 + 0.1 / n_classes
        weak_term = -(smoothed * log_w).sum(dim=1).mean()

        with torch.no_grad():
            w = log_w.exp()
            w_target = w.gather(1, index)
            score = w / (1.0 - w_target + 1e-6) + log_p / (1.0 - log_p.gather(1, index) + 1e-6)
            order = torch.argsort(score, dim=1, descending=True)
            position = torch.argsort(order, dim=1)  # 0 for the top-ranked class
            zipf = non_target_logits(1.0 / (position + 1).to(s.dtype), target)
            zipf = zipf / zipf.sum(dim=1, keepdim=True)
        non_target_term = -(zipf * F.log_softmax(non_target_logits(s, target), dim=1)).sum(dim=1).mean()
        return self.alpha * target_term + self.beta * non_target_term + self.mu * weak_term

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, mu={self.mu}"
