"""The student's objective, built and checked from a recipe section when the recipe is loaded.

``objective = ce_weight * CE(s, y) + kd_weight * ramp(epoch) * distill(s, t, y)``

with ``distill`` any distillation loss of :mod:`kdcore.losses` (its own formula only: for ``kd`` that is
``T^2 * KL(teacher || student)``, without KDLoss's built-in label term). The one owner of the mapping from
recipe to loss: every vertical's student section inherits :class:`DistillationSection`, whose validator resolves
the shorthands and defaults and builds the loss once, so a wrong name, parameter or value stops the recipe load
with the key named, before any data is read or folder made.

Resolution (what ``config`` prints and ``config.yaml`` records):

* ``temperature``: ``kd_loss_params.temperature`` if given, else ``student.temperature`` if given, else the
  loss's published default (``kd``/``dkd``/``balanced_kl`` 4, ``nkd``/``reverse_kl`` 1).
* ``ce_weight``/``kd_weight``: as given; ``alpha`` is shorthand for ``ce_weight = alpha``,
  ``kd_weight = 1 - alpha`` (setting both forms is an error); neither: the loss's published weights
  (:data:`PUBLISHED_WEIGHTS`: ``kd`` 0.3 : 0.7 as KD-OCT's code, ``dkd`` and ``nkd`` 1 : 1 as their papers).
* ``kd_warmup_epochs``: the distillation weight is multiplied by ``min((epoch + 1) / W, 1)`` for 0-based
  epochs (mdistiller's ``min(epoch / warmup, 1)`` with epochs counted from 1); None takes the loss's
  published value (``dkd`` 20, others 0).

Example:
    >>> import torch
    >>> class Student(DistillationSection):
    ...     pass
    >>> s = Student(kd_loss="nkd")
    >>> s.temperature, s.ce_weight, s.kd_weight, s.kd_warmup_epochs
    (1.0, 1.0, 1.0, 0.0)
    >>> Student(alpha=0.3).kd_weight
    0.7
    >>> objective = build_student_objective(Student(kd_loss="dkd", kd_warmup_epochs=4))
    >>> objective.set_epoch(0); objective.kd_factor
    0.25
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import Field, KeyedValueError, Section, field_validator, model_validator
from .losses import build_loss, distillation_losses
from .losses._registry import _LOSSES, _suggest
from .losses._validation import check_distill_inputs, check_non_negative, compute_dtype

__all__ = ["DistillationSection", "StudentObjective", "build_student_objective", "resolve_objective",
           "PUBLISHED_WEIGHTS", "PUBLISHED_WARMUP"]

# (ce_weight, kd_weight) of each loss as published; losses without a paper setting default to 1 : 1.
PUBLISHED_WEIGHTS: dict[str, tuple[float, float]] = {
    "kd": (0.3, 0.7),   # KD-OCT's code: beta 0.3 on CE, alpha 0.7 on T^2 * KL
    "dkd": (1.0, 1.0),  # mdistiller DKD: CE_WEIGHT 1.0, the loss's own alpha/beta inside
    "nkd": (1.0, 1.0),  # cls_KD NKD: label CE plus NKD with loss_weight 1.0
}
PUBLISHED_WARMUP: dict[str, float] = {"dkd": 20.0}  # mdistiller DKD.WARMUP


def _loss_parameters(name: str) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(_LOSSES[name]).parameters)


def resolve_objective(kd_loss: str, temperature: float | None = None, alpha: float | None = None,
                      ce_weight: float | None = None, kd_weight: float | None = None,
                      kd_warmup_epochs: float | None = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fill in every default and shorthand; check the loss's parameters by building it once.

    Returns the resolved fields (``alpha`` None, ``temperature`` no longer in ``kd_loss_params``).

    Raises:
        KeyedValueError: naming the key (relative to the student section) and why.
    """
    if kd_loss not in distillation_losses():
        known = distillation_losses()
        raise KeyedValueError("kd_loss", f"unknown distillation loss {kd_loss!r}{_suggest(str(kd_loss), known)} "
                                         f"(known: {', '.join(known)})")
    params = dict(params or {})
    signature = _loss_parameters(kd_loss)
    for key in params:
        if key == "alpha" and kd_loss == "kd":
            raise KeyedValueError("kd_loss_params.alpha", "the label/distillation balance of 'kd' is "
                                  "student.ce_weight and student.kd_weight (or the shorthand student.alpha)")
        if key not in signature:
            valid = [p for p in signature if not (kd_loss == "kd" and p == "alpha")]
            raise KeyedValueError(f"kd_loss_params.{key}", f"unknown argument of loss {kd_loss!r}"
                                  f"{_suggest(key, valid)}; valid: {', '.join(valid)}")
    if "temperature" in params:
        temperature = params.pop("temperature")
        temperature_key = "kd_loss_params.temperature"
    else:
        temperature_key = "temperature"
    if "temperature" in signature:
        if temperature is None:
            temperature = float(signature["temperature"].default)
    elif temperature is not None:
        raise KeyedValueError(temperature_key, f"loss {kd_loss!r} takes no temperature")

    if alpha is not None:
        if ce_weight is not None or kd_weight is not None:
            raise KeyedValueError("alpha", "set either alpha (shorthand) or ce_weight/kd_weight, not both")
        ce_weight, kd_weight = float(alpha), 1.0 - float(alpha)
    published_ce, published_kd = PUBLISHED_WEIGHTS.get(kd_loss, (1.0, 1.0))
    ce_weight = published_ce if ce_weight is None else float(ce_weight)
    kd_weight = published_kd if kd_weight is None else float(kd_weight)
    if kd_warmup_epochs is None:
        kd_warmup_epochs = PUBLISHED_WARMUP.get(kd_loss, 0.0)

    kwargs = dict(params)
    if temperature is not None:
        kwargs["temperature"] = temperature
    if kd_loss == "kd":
        kwargs["alpha"] = 0.0  # the label term is the objective's, not KDLoss's
    try:
        build_loss(kd_loss, **kwargs)
    except Exception as error:  # the loss's own checks: "gamma must be a finite number >= 0, got -1"
        reason = str(error.__cause__ or error)
        key = next((k for k in kwargs if reason.startswith(k)), None)
        where = temperature_key if key == "temperature" else (f"kd_loss_params.{key}" if key else "kd_loss_params")
        raise KeyedValueError(where, reason) from None
    return {"kd_loss": kd_loss, "temperature": None if temperature is None else float(temperature), "alpha": None,
            "ce_weight": ce_weight, "kd_weight": kd_weight, "kd_warmup_epochs": float(kd_warmup_epochs),
            "kd_loss_params": params}


class DistillationSection(Section):
    """Recipe fields of a student distilled with a logit loss; resolved and checked on load (see module doc)."""

    kd_loss: str = Field("kd", description="any loss of kdcore.losses.distillation_losses()")
    temperature: float | None = Field(None, gt=0, description="None = the loss's published default")
    alpha: float | None = Field(None, ge=0, le=1, description="shorthand: ce_weight = alpha, kd_weight = 1 - alpha")
    ce_weight: float | None = Field(None, ge=0, description="weight of the hard-label cross-entropy; None = published")
    kd_weight: float | None = Field(None, ge=0, description="weight of the distillation term; None = published")
    kd_warmup_epochs: float | None = Field(None, ge=0, description="ramp kd_weight up over these epochs; "
                                                                   "None = published (dkd 20, others 0)")
    kd_loss_params: dict[str, float] = Field(default_factory=dict, description="extra arguments of kd_loss")

    @field_validator("kd_loss")
    @classmethod
    def _known_distillation_loss(cls, name: str) -> str:
        if name not in distillation_losses():
            raise ValueError(f"unknown distillation loss {name!r}{_suggest(str(name), distillation_losses())} "
                             f"(known: {', '.join(distillation_losses())})")
        return name

    @model_validator(mode="after")
    def _resolve_objective(self) -> "DistillationSection":
        resolved = resolve_objective(self.kd_loss, self.temperature, self.alpha, self.ce_weight, self.kd_weight,
                                     self.kd_warmup_epochs, self.kd_loss_params)
        epochs = getattr(getattr(self, "train", None), "epochs", None)
        if epochs is not None and resolved["kd_warmup_epochs"] > epochs:
            if self.kd_warmup_epochs is None:
                # The published ramp (DKD: 20 of 240 epochs) outlasts this recipe's training: ramp over the whole
                # of it instead, so `--set student.kd_loss=dkd` works on a short recipe. The resolved value is
                # what config.yaml, `config` and the report show.
                resolved["kd_warmup_epochs"] = float(epochs)
            else:
                raise KeyedValueError("kd_warmup_epochs", f"{resolved['kd_warmup_epochs']:g} is more than "
                                      f"train.epochs ({epochs}): the distillation weight would never reach kd_weight")
        for key, value in resolved.items():
            if getattr(self, key) != value:
                # Not a validated assignment: that would re-enter this validator. The values are checked above.
                object.__setattr__(self, key, value)
                self.__pydantic_fields_set__.add(key)
        return self


class StudentObjective(nn.Module):
    """``ce_weight * CE(s, y) + kd_weight * min((epoch + 1) / W, 1) * distill(s, t, y)``.

    The engine calls :meth:`set_epoch` (through the task) before each epoch; ``W = kd_warmup_epochs`` (0: no ramp).

    Example:
        >>> from kdcore.losses import KDLoss
        >>> s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
        >>> objective = StudentObjective(KDLoss(alpha=0.0), ce_weight=0.3, kd_weight=0.7)
        >>> bool(torch.isclose(objective(s, t, y), KDLoss(alpha=0.3)(s, t, y)))
        True
    """

    uses_teacher = True

    def __init__(self, distill: nn.Module, ce_weight: float = 1.0, kd_weight: float = 1.0,
                 kd_warmup_epochs: float = 0.0) -> None:
        super().__init__()
        if not getattr(distill, "uses_teacher", False):
            raise TypeError(f"distill must be a distillation loss called (student, teacher, target), "
                            f"got {type(distill).__name__}")
        self.distill = distill
        self.ce_weight = check_non_negative(ce_weight, "ce_weight")
        self.kd_weight = check_non_negative(kd_weight, "kd_weight")
        self.kd_warmup_epochs = check_non_negative(kd_warmup_epochs, "kd_warmup_epochs")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def kd_factor(self) -> float:
        if self.kd_warmup_epochs <= 0:
            return 1.0
        return min((self.epoch + 1) / self.kd_warmup_epochs, 1.0)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_distill_inputs(student_logits, teacher_logits, target)
        ce = F.cross_entropy(compute_dtype(student_logits), target)
        kd = self.distill(student_logits, teacher_logits, target)
        return self.ce_weight * ce + self.kd_weight * self.kd_factor * kd

    def extra_repr(self) -> str:
        return f"ce_weight={self.ce_weight}, kd_weight={self.kd_weight}, kd_warmup_epochs={self.kd_warmup_epochs}"


def build_student_objective(section: DistillationSection) -> StudentObjective:
    """The objective of a (validated, hence resolved) student section."""
    kwargs = dict(section.kd_loss_params)
    if section.temperature is not None:
        kwargs["temperature"] = section.temperature
    if section.kd_loss == "kd":
        kwargs["alpha"] = 0.0
    distill = build_loss(section.kd_loss, **kwargs)
    return StudentObjective(distill, section.ce_weight, section.kd_weight, section.kd_warmup_epochs or 0.0)
