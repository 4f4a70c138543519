"""Logit distillation losses, buildable by name from a recipe.

Distillation losses are ``nn.Module``\\ s called ``(student_logits, teacher_logits, target)`` with (B, C) logits
and a (B,) long target; hard-label losses ("ce", "focal") are called ``(logits, target)``. The class attribute
``uses_teacher`` tells which. All return a scalar (focal/ce: unless ``reduction="none"``).

Feature losses (``uses_feature``): ``nd`` and ``hint`` are called ``(student_feature, teacher_feature, target)``
(``needs_teacher_features``) and ``uskd`` ``(student_logits, target, student_feature)`` (no teacher); each has a
``bind(...)`` that creates its learned parts from the shapes. ``dml`` and ``bdkd`` are ``online_only``: the
"teacher" is a peer trained on the same batches (:mod:`kdcore.online`).

Example:
    >>> import torch
    >>> from kdcore.losses import build_loss, list_losses
    >>> list_losses()
    ['balanced_kl', 'bdkd', 'ce', 'dkd', 'dml', 'focal', 'hint', 'kd', 'nd', 'nkd', 'reverse_kl', 'uskd']
    >>> loss = build_loss("dkd", beta=8.0)
    >>> s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    >>> loss(s, t, y).shape
    torch.Size([])
"""

from ._registry import (build_loss, distillation_losses, feature_losses, list_losses, online_losses, register_loss,
                        self_distillation_losses)
from .class_weights import balanced_class_weights
from .divergence import BalancedDivergenceLoss, ReverseKLLoss, forward_kl, reverse_kl
from .dkd import DKDLoss, dkd_terms
from .focal import FocalLoss
from .hard_label import CrossEntropyLoss, WithHardLabel
from .kd import KDLoss
from .nkd import NKDLoss
from .bdkd import BDKDLoss
from .dml import DMLLoss
from .hint import HintLoss
from .nd import NDLoss, class_mean_embeddings
from .uskd import USKDLoss

__all__ = [
    "register_loss", "build_loss", "list_losses", "distillation_losses",
    "KDLoss", "DKDLoss", "dkd_terms", "NKDLoss", "ReverseKLLoss", "BalancedDivergenceLoss", "forward_kl",
    "reverse_kl", "FocalLoss", "CrossEntropyLoss", "WithHardLabel", "balanced_class_weights",
    "feature_losses", "self_distillation_losses", "online_losses", "USKDLoss", "NDLoss", "class_mean_embeddings",
    "HintLoss", "DMLLoss", "BDKDLoss",
]
