"""ND loss (Wang et al., "Improving Knowledge Distillation via Regularizing Feature Norm and Direction", 2023):
align the student's embedding with the teacher's class-mean direction and push its norm up.

Matches ``DirectNormLoss`` of github.com/WangYZ1608/Knowledge-Distillation-via-ND (``CIFAR/utils.py``); the
class means are the teacher's mean pooled embeddings per class over the TRAINING images
(:func:`class_mean_embeddings`, as the repository's ``emb_fea_distribution.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import DataError
from ..features import POOLED, FeatureTaps, Projector, pool_feature
from ._registry import register_loss
from ._validation import compute_dtype

__all__ = ["NDLoss", "class_mean_embeddings"]


@register_loss("nd")
class NDLoss(nn.Module):
    """``loss = (1/B) sum_i [1 - <s_i, c_yi / ||c_yi||> / max(||s_i||, ||t_i||)]``.

    ``s_i`` is the student's pooled embedding (projected to the teacher's width by a learned linear layer when
    the widths differ, as the paper's ``EmbTrans``; theirs adds BatchNorm and dropout before it), ``t_i`` the
    teacher's embedding of the same image and ``c_y`` the teacher's mean training embedding of class ``y``.
    The dot product pulls the student's direction onto the class mean; dividing by the larger of the two norms
    (rather than by ``||s_i||``) rewards a student norm up to the teacher's.

    Call ``loss(student_embedding, teacher_embedding, target)`` after :meth:`set_class_means` and
    :meth:`bind`. ``uses_feature`` and ``needs_teacher_features`` are True, ``uses_teacher`` (logits) False.

    Example:
        >>> loss = NDLoss().bind((4, 8), (4, 8))
        >>> loss.set_class_means(torch.eye(3, 8))
        >>> round(float(loss(torch.eye(3, 8), torch.eye(3, 8), torch.tensor([0, 1, 2]))), 4)  # aligned: 0
        0.0
    """

    uses_teacher = False
    uses_feature = True
    needs_teacher_features = True
    feature_path = POOLED

    def __init__(self) -> None:
        super().__init__()
        self.projector: nn.Module = nn.Identity()
        self.register_buffer("class_means", None)

    def bind(self, student_shape: Any, teacher_shape: Any) -> "NDLoss":
        """Create the projector for pooled embeddings of these shapes (identity when the widths match)."""
        s, t = tuple(student_shape), tuple(teacher_shape)
        self.projector = Projector.for_shapes((s[0], s[1]), (t[0], t[1]), identity_if_equal=True)
        return self

    def set_class_means(self, means: torch.Tensor) -> None:
        """The teacher's (C, D) class-mean embeddings of this fold's training images."""
        if means.ndim != 2 or not torch.isfinite(means).all():
            raise ValueError(f"class means must be a finite (C, D) tensor, got shape {tuple(means.shape)}")
        self.class_means = means.detach().float().clone()

    def forward(self, student_embedding: torch.Tensor, teacher_embedding: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
        if self.class_means is None:
            raise RuntimeError("NDLoss.set_class_means(means) must be called before the first batch")
        s = compute_dtype(self.projector(pool_feature(student_embedding)))
        t = compute_dtype(pool_feature(teacher_embedding)).to(s.dtype)
        if s.shape != t.shape or s.shape[1] != self.class_means.shape[1]:
            raise ValueError(f"student embedding {tuple(s.shape)} (after projection), teacher embedding "
                             f"{tuple(t.shape)} and class means {tuple(self.class_means.shape)} must share the width")
        centers = self.class_means.to(s.device, s.dtype)[target]
        direction = centers / centers.norm(dim=1, keepdim=True)
        max_norm = torch.maximum(s.norm(dim=1), t.norm(dim=1))
        return (1.0 - (s * direction).sum(dim=1) / max_norm).mean()


@torch.no_grad()
def class_mean_embeddings(teacher: nn.Module, loader: Any, n_classes: int, device: torch.device | str = "cpu",
                          path: str = POOLED, image_key: str = "image", target_key: str = "target") -> torch.Tensor:
    """The teacher's mean pooled embedding of each class, shape (n_classes, D), in float32.

    Pass the fold's TRAINING loader only (never validation or test images), without random augmentation for a
    reproducible mean. ``teacher`` is a plain model or a :class:`kdcore.teacher.FrozenTeacher`; batches are
    dicts (``image_key``, ``target_key``) or ``(images, targets)`` pairs.

    Raises:
        DataError: a class has no training image (its mean is undefined).
    """
    model = getattr(teacher, "model", teacher)
    was_training = model.training
    model.eval()
    sums: torch.Tensor | None = None
    counts = torch.zeros(n_classes, dtype=torch.float64)
    with FeatureTaps(model, (path,)) as taps:
        for batch in loader:
            images, targets = ((batch[image_key], batch[target_key]) if isinstance(batch, dict) else batch[:2])
            model(images.to(device))
            embedding = pool_feature(taps[path]).double().cpu()
            targets = torch.as_tensor(targets).long().cpu()
            if sums is None:
                sums = torch.zeros(n_classes, embedding.shape[1], dtype=torch.float64)
            sums.index_add_(0, targets, embedding)
            counts += torch.bincount(targets, minlength=n_classes).double()
    model.train(was_training)
    missing = [c for c in range(n_classes) if counts[c] == 0]
    if sums is None or missing:
        raise DataError(f"class mean embeddings: no training image of class index {missing or list(range(n_classes))}")
    return (sums / counts.unsqueeze(1)).float()
