"""Online (collaborative) distillation: teacher and student trained together on the same batches, by the one
engine (:class:`kdcore.engine.Trainer`) without changing it.

* :class:`OnlinePair` is the model the engine trains: both networks, one optimizer (both classifiers form the
  head group), one checkpoint. In eval mode (validation, prediction) it is the student.
* :class:`OnlineObjective`: ``teacher_loss(t, y) + w * peer(t <- s) + student_objective(s, t, y)``: the teacher
  learns from the labels and from the (detached) student, the student from the labels and the (detached)
  teacher: DML's mutual KL, or BD-KD's balanced student term with the teacher's reverse-KL regulariser.
* :class:`OnlineTask` is the engine's task: ``loss``, ``validate`` (the student's metrics, and the teacher's as
  ``teacher_<name>``), ``inputs``.
* After ``fit``, :meth:`OnlinePair.split_pair` gives the two trained networks, saved as two models.

Example:
    >>> import torch
    >>> from kdcore.losses import CrossEntropyLoss, DMLLoss
    >>> from kdcore.objective import StudentObjective
    >>> t_net, s_net = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    >>> pair = OnlinePair(t_net, s_net)
    >>> objective = OnlineObjective(StudentObjective(DMLLoss()), CrossEntropyLoss())
    >>> t_logits, s_logits = pair(torch.randn(2, 4), both=True)
    >>> total, parts = objective(t_logits, s_logits, torch.tensor([0, 2]))
    >>> sorted(parts)
    ['student_loss', 'teacher_loss']
    >>> pair.split_pair() == (t_net, s_net)
    True
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .losses import online_losses
from .objective import DistillationSection, StudentObjective, build_student_objective

__all__ = ["OnlinePair", "OnlineObjective", "OnlineTask", "build_online_objective", "unwrap_pair"]


class OnlinePair(nn.Module):
    """Teacher and student as one trainable module; ``forward`` is the student's unless ``both``.

    ``pair(images, both=True)`` returns ``(teacher_logits, student_logits)`` of one batch; ``both`` defaults to
    the training mode, so SWA's BatchNorm update (train mode) refreshes both networks and validation (eval mode)
    scores the student.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module):
        super().__init__()
        self.teacher = teacher
        self.student = student

    def forward(self, images: torch.Tensor, both: bool | None = None):
        if self.training if both is None else both:
            return self.teacher(images), self.student(images)
        return self.student(images)

    def get_classifier(self) -> nn.Module:
        """Both classifiers: the engine's head group (learning rate ``lr``), the rest backbone."""
        return nn.ModuleList([_classifier(self.teacher), _classifier(self.student)])

    def split_pair(self) -> tuple[nn.Module, nn.Module]:
        """The trained ``(teacher, student)``, e.g. from ``FitResult.model``, each saved as its own model."""
        return self.teacher, self.student


def _classifier(model: nn.Module) -> nn.Module:
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(classifier, nn.Module):
        raise ValueError(f"{type(model).__name__}: no classifier (get_classifier()) for the head group")
    return classifier


def unwrap_pair(model: nn.Module) -> OnlinePair:
    """The :class:`OnlinePair` inside a DDP / compiled / SWA-averaged wrapper (or the pair itself)."""
    seen = model
    for _ in range(4):
        if isinstance(seen, OnlinePair):
            return seen
        seen = getattr(seen, "module", None) or getattr(seen, "_orig_mod", None)
        if seen is None:
            break
    raise TypeError(f"expected an OnlinePair (possibly wrapped), got {type(model).__name__}")


class OnlineObjective(nn.Module):
    """``teacher_loss(t, y) + teacher_kd_weight * ramp * peer + student_objective(s, t.detach(), y)``.

    ``peer`` is the distillation loss's ``teacher_term(t, s, y)`` when it has one (BD-KD's reverse KL), else the
    same loss with the roles swapped, ``distill(t, s, y)`` (DML's KL(p_s || p_t), the student detached by the
    loss). Gradients: the student's part reaches only the student, the teacher's only the teacher.

    Args:
        student_objective: the student's objective, whose ``distill`` is an ``online_only`` loss (dml, bdkd).
        teacher_loss: the teacher's own hard-label loss, called ``(logits, target)`` (e.g. focal or CE).
        teacher_kd_weight: weight of the teacher's distillation term; None = the student's ``kd_weight``.
    """

    def __init__(self, student_objective: StudentObjective, teacher_loss: nn.Module,
                 teacher_kd_weight: float | None = None):
        super().__init__()
        distill = student_objective.distill
        if not getattr(distill, "online_only", False):
            raise TypeError(f"online distillation needs one of {', '.join(online_losses())}, "
                            f"got {type(distill).__name__}")
        if student_objective.feature_loss is not None:
            raise TypeError("feature losses are not supported in online distillation")
        self.student_objective = student_objective
        self.teacher_loss = teacher_loss
        self.teacher_kd_weight = (student_objective.kd_weight if teacher_kd_weight is None
                                  else float(teacher_kd_weight))

    def set_epoch(self, epoch: int) -> None:
        self.student_objective.set_epoch(epoch)

    @property
    def kd_factor(self) -> float:
        return self.student_objective.kd_factor

    def forward(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        distill = self.student_objective.distill
        if hasattr(distill, "teacher_term"):
            peer = distill.teacher_term(teacher_logits, student_logits, target)
        else:
            peer = distill(teacher_logits, student_logits.detach(), target)
        teacher_part = self.teacher_loss(teacher_logits, target) + self.teacher_kd_weight * self.kd_factor * peer
        student_part = self.student_objective(student_logits, teacher_logits.detach(), target)
        return teacher_part + student_part, {"teacher_loss": teacher_part.detach(),
                                             "student_loss": student_part.detach()}


def build_online_objective(section: DistillationSection, teacher_loss: nn.Module,
                           teacher_kd_weight: float | None = None) -> OnlineObjective:
    """The online objective of a student section with ``kd_loss: dml | bdkd`` (checked by
    :func:`kdcore.objective.validate_distillation_mode` at recipe load)."""
    return OnlineObjective(build_student_objective(section), teacher_loss, teacher_kd_weight)


class OnlineTask:
    """The engine's task for an :class:`OnlinePair`.

    Args:
        objective: the pair's :class:`OnlineObjective`.
        validate: the vertical's validation of ONE classifier, ``validate(model) -> {metric: value}`` on the
            fold's inner-validation data (e.g. ``medkd.tasks.ClassificationTask(...).validate``); called for the
            student (the keys the engine monitors) and for the teacher (reported as ``teacher_<metric>``).
        image_key, target_key: keys of a dict batch.
    """

    def __init__(self, objective: OnlineObjective, validate: Callable[[nn.Module], dict[str, float]],
                 image_key: str = "image", target_key: str = "target"):
        self.objective = objective
        self._validate = validate
        self.image_key, self.target_key = image_key, target_key

    def set_epoch(self, epoch: int) -> None:
        self.objective.set_epoch(epoch)

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        teacher_logits, student_logits = model(batch[self.image_key], both=True)
        teacher_logits, student_logits = teacher_logits.float(), student_logits.float()
        total, logs = self.objective(teacher_logits, student_logits, batch[self.target_key])
        agreement = teacher_logits.detach().argmax(1) == student_logits.detach().argmax(1)
        logs["teacher_agreement"] = agreement.float().mean()
        return total, logs

    def validate(self, model: nn.Module) -> dict[str, float]:
        pair = unwrap_pair(model)
        metrics = dict(self._validate(pair.student))
        metrics.update({f"teacher_{key}": value for key, value in self._validate(pair.teacher).items()})
        return metrics

    def inputs(self, batch: Any) -> torch.Tensor:
        return batch[self.image_key]
