"""Logit distillation losses, buildable by name from a recipe.

Distillation losses are ``nn.Module``\\ s called ``(student_logits, teacher_logits, target)`` with (B, C) logits
and a (B,) long target; hard-label losses ("ce", "focal") are called ``(logits, target)``. The class attribute
``uses_teacher`` tells which. All return a scalar (focal/ce: unless ``reduction="none"``).

Example:
    >>> import torch
    >>> from kdcore.losses import build_loss, list_losses
    >>> list_losses()
    ['balanced_kl', 'ce', 'dkd', 'focal', 'kd', 'nkd', 'reverse_kl']
    >>> loss = build_loss("dkd", beta=8.0)
    >>> s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    >>> loss(s, t, y).shape
    torch.Size([])
"""

from ._registry import build_loss, distillation_losses, list_losses, register_loss
from .class_weights import balanced_class_weights
from .divergence import BalancedDivergenceLoss, ReverseKLLoss, forward_kl, reverse_kl
from .dkd import DKDLoss, dkd_terms
from .focal import FocalLoss
from .hard_label import CrossEntropyLoss, WithHardLabel
from .kd import KDLoss
from .nkd import NKDLoss

__all__ = [
    "register_loss", "build_loss", "list_losses", "distillation_losses",
    "KDLoss", "DKDLoss", "dkd_terms", "NKDLoss", "ReverseKLLoss", "BalancedDivergenceLoss", "forward_kl",
    "reverse_kl", "FocalLoss", "CrossEntropyLoss", "WithHardLabel", "balanced_class_weights",
]
