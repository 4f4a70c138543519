"""A feature term beside a vertical's own loss: ``weight * loss(student feature, teacher feature)``.

For verticals whose distillation is not a logit loss (facekd's landmark KD-Loss), so that FitNets hints work
there too: the term taps the student, asks one teacher for its features and owns the learned projector (the
engine trains it as the task's ``auxiliary`` and never exports it). Classification students use
:class:`kdcore.objective.StudentObjective`, which holds the same term inside.

Example:
    >>> import torch
    >>> from kdcore.losses import build_loss
    >>> term = FeatureTerm(build_loss("hint"), weight=0.5).bind((2, 3), (2, 6))
    >>> bool(term(torch.randn(2, 3), torch.randn(2, 6)) >= 0)
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .features import POOLED, FeatureTaps
from .losses import build_loss
from .losses._validation import check_non_negative

__all__ = ["FeatureTerm", "build_feature_term"]


class FeatureTerm(nn.Module):
    """``weight * loss(student_features, teacher_features, target)`` on the features at the two paths."""

    needs_student_features = True
    needs_teacher_features = True

    def __init__(self, loss: nn.Module, weight: float = 1.0, student_feature_path: str = POOLED,
                 teacher_feature_path: str | None = None):
        super().__init__()
        if not getattr(loss, "needs_teacher_features", False) or hasattr(loss, "set_class_means"):
            raise TypeError(f"a feature term needs a feature loss without class means (hint), "
                            f"got {type(loss).__name__}")
        self.feature_loss = loss
        self.weight = check_non_negative(weight, "feature_weight")
        self.student_feature_path = student_feature_path
        self.teacher_feature_path = teacher_feature_path or student_feature_path

    @property
    def has_parameters(self) -> bool:
        return any(True for _ in self.parameters())

    def bind(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> "FeatureTerm":
        self.feature_loss.bind(tuple(student_shape), tuple(teacher_shape))
        return self

    def bind_models(self, student: nn.Module, teacher: nn.Module, example: torch.Tensor) -> "FeatureTerm":
        """:meth:`bind` from one dry eval-mode forward pass of each model on ``example``."""
        from .objective import _feature_shape

        student_shape, _ = _feature_shape(student, self.student_feature_path, example)
        teacher_shape, _ = _feature_shape(getattr(teacher, "model", teacher), self.teacher_feature_path, example)
        return self.bind(student_shape, teacher_shape)

    def tap(self, student: nn.Module) -> FeatureTaps:
        return FeatureTaps(student, (self.student_feature_path,))

    def features(self, taps: FeatureTaps, teacher: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's feature of the batch just run (``taps``) and the teacher's (live or cached)."""
        found = getattr(teacher, "features", {})
        if self.teacher_feature_path not in found:
            raise ValueError(f"the teacher gave no {self.teacher_feature_path!r} feature: build it with "
                             f"features=({self.teacher_feature_path!r},)")
        return taps[self.student_feature_path], found[self.teacher_feature_path]

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor,
                target: torch.Tensor | None = None) -> torch.Tensor:
        return self.weight * self.feature_loss(student_features, teacher_features, target)


def build_feature_term(section: Any) -> FeatureTerm | None:
    """The term of a section with ``feature_loss``, ``feature_weight``, ``feature_params``, ``feature_path``,
    ``teacher_feature_path`` (None when ``feature_loss`` is unset)."""
    if getattr(section, "feature_loss", None) is None:
        return None
    weight = 1.0 if section.feature_weight is None else section.feature_weight
    return FeatureTerm(build_loss(section.feature_loss, **dict(section.feature_params)), weight,
                       section.feature_path or POOLED, section.teacher_feature_path)
