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

Beyond logits (issue 13; all default off, so a section without these keys builds the objective of before):

* ``feature_loss``: ``nd`` or ``hint`` (:func:`kdcore.losses.feature_losses`), a term on the student's and the
  teacher's ``feature_path`` outputs (``"pooled"``, ``"stage:<i>"`` or a module path; None = the loss's own),
  ``+ feature_weight * feature(s_f, t_f, y)``
  (``feature_weight`` None = the paper's: ND's ``nd_loss_factor`` 1.0, FitNets 1.0); ``feature_params`` are the
  loss's arguments, checked like ``kd_loss_params``.
* ``kd_loss: uskd``: self-distillation, no teacher (:func:`needs_teacher`); its feature is ``feature_path``.
* ``kd_loss: dml | bdkd``: only with ``distillation: online`` (:data:`DistillationMode`), checked by
  :func:`validate_distillation_mode`, which the recipe's top level calls.

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
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .config import Field, KeyedValueError, Section, field_validator, model_validator
from .features import POOLED, FeatureTaps
from .losses import build_loss, distillation_losses, feature_losses, online_losses, self_distillation_losses
from .losses._registry import _LOSSES, _suggest
from .losses._validation import check_distill_inputs, check_logits, check_non_negative, compute_dtype

__all__ = ["DistillationSection", "StudentObjective", "build_student_objective", "resolve_objective",
           "PUBLISHED_WEIGHTS", "PUBLISHED_WARMUP", "PUBLISHED_FEATURE_WEIGHTS", "DistillationMode", "needs_teacher",
           "validate_distillation_mode", "resolve_feature_loss", "student_losses"]

DistillationMode = Literal["offline", "online"]
"""``offline``: a trained, frozen teacher (today's behaviour). ``online``: teacher and student trained together
on the same batches (:mod:`kdcore.online`), for ``kd_loss: dml | bdkd``."""

# (ce_weight, kd_weight) of each loss as published; losses without a paper setting default to 1 : 1.
PUBLISHED_WEIGHTS: dict[str, tuple[float, float]] = {
    "kd": (0.3, 0.7),   # KD-OCT's code: beta 0.3 on CE, alpha 0.7 on T^2 * KL
    "dkd": (1.0, 1.0),  # mdistiller DKD: CE_WEIGHT 1.0, the loss's own alpha/beta inside
    "nkd": (1.0, 1.0),  # cls_KD NKD: label CE plus NKD with loss_weight 1.0
    "uskd": (1.0, 1.0),  # cls_KD USKD: label CE plus USKD (its alpha/beta/mu inside)
    "dml": (1.0, 1.0),  # DML: L_C + D_KL(p2 || p1)
}
PUBLISHED_WARMUP: dict[str, float] = {"dkd": 20.0}  # mdistiller DKD.WARMUP
PUBLISHED_FEATURE_WEIGHTS: dict[str, float] = {"nd": 1.0, "hint": 1.0}  # ND's nd_loss_factor; FitNets' hint


def student_losses() -> list[str]:
    """Names accepted as ``kd_loss``: the distillation losses and the teacher-free (self-distillation) ones."""
    return sorted(set(distillation_losses()) | set(self_distillation_losses()))


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
    if kd_loss not in student_losses():
        known = student_losses()
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
    feature_loss: str | None = Field(None, description="nd | hint: a term on intermediate features; None = off")
    feature_weight: float | None = Field(None, ge=0, description="weight of the feature term; None = published")
    feature_params: dict[str, float] = Field(default_factory=dict, description="extra arguments of feature_loss")
    feature_path: str | None = Field(None, description="student feature: 'pooled', 'stage:<i>' or a module path; "
                                                       "None = the loss's (uskd stage:-2, else pooled)")
    teacher_feature_path: str | None = Field(None, description="teacher feature; None = feature_path")

    @field_validator("kd_loss")
    @classmethod
    def _known_distillation_loss(cls, name: str) -> str:
        if name not in student_losses():
            raise ValueError(f"unknown distillation loss {name!r}{_suggest(str(name), student_losses())} "
                             f"(known: {', '.join(student_losses())})")
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
        resolved.update(resolve_feature_loss(self.feature_loss, self.feature_weight, self.feature_params,
                                             kd_loss=self.kd_loss))
        owner = self.kd_loss if self.kd_loss in self_distillation_losses() else resolved["feature_loss"]
        if self.feature_path is None and owner is not None:  # unused (no feature term): stays None
            resolved["feature_path"] = getattr(_LOSSES[owner], "feature_path", POOLED)
        for key, value in resolved.items():
            if getattr(self, key) != value:
                # Not a validated assignment: that would re-enter this validator. The values are checked above.
                object.__setattr__(self, key, value)
                self.__pydantic_fields_set__.add(key)
        return self


def resolve_feature_loss(feature_loss: str | None, feature_weight: float | None = None,
                         params: dict[str, Any] | None = None, kd_loss: str | None = None) -> dict[str, Any]:
    """Check the feature term's keys (name, arguments, weight) by building its loss once; fill the weight.

    Raises:
        KeyedValueError: naming ``feature_loss``, ``feature_params.<key>`` or ``feature_weight``.
    """
    params = dict(params or {})
    if feature_loss is None:
        if params:
            raise KeyedValueError("feature_params", "set feature_loss (nd or hint) to use feature_params")
        return {"feature_loss": None, "feature_weight": feature_weight, "feature_params": params}
    known = feature_losses()
    if feature_loss not in known:
        raise KeyedValueError("feature_loss", f"unknown feature loss {feature_loss!r}"
                              f"{_suggest(str(feature_loss), known)} (known: {', '.join(known)})")
    if kd_loss is not None and kd_loss in self_distillation_losses():
        raise KeyedValueError("feature_loss", f"{feature_loss!r} needs a teacher's features, and kd_loss "
                              f"{kd_loss!r} trains no teacher")
    signature = _loss_parameters(feature_loss)
    for key in params:
        if key not in signature:
            raise KeyedValueError(f"feature_params.{key}", f"unknown argument of loss {feature_loss!r}"
                                  f"{_suggest(key, list(signature))}; valid: {', '.join(signature) or 'none'}")
    try:
        build_loss(feature_loss, **params)
    except Exception as error:
        raise KeyedValueError("feature_params", str(error.__cause__ or error)) from None
    weight = PUBLISHED_FEATURE_WEIGHTS.get(feature_loss, 1.0) if feature_weight is None else float(feature_weight)
    return {"feature_loss": feature_loss, "feature_weight": weight, "feature_params": params}


def needs_teacher(section: DistillationSection) -> bool:
    """Whether a student section needs a teacher: False only for self-distillation (``kd_loss: uskd``)."""
    return section.kd_loss not in self_distillation_losses() or getattr(section, "feature_loss", None) is not None


def validate_distillation_mode(mode: DistillationMode, section: DistillationSection,
                               section_key: str = "student") -> None:
    """Check a student section against the recipe's ``distillation`` mode; call it from the recipe's top level.

    Raises:
        KeyedValueError: naming ``<section_key>.kd_loss`` (or ``.feature_loss``) and why.

    Example:
        >>> class Student(DistillationSection):
        ...     pass
        >>> validate_distillation_mode("offline", Student(kd_loss="dml"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        kdcore.config.KeyedValueError: 'dml' trains teacher and student together: it needs distillation: online...
    """
    kd_loss = section.kd_loss
    if mode == "offline" and kd_loss in online_losses():
        raise KeyedValueError(f"{section_key}.kd_loss", f"{kd_loss!r} trains teacher and student together: it needs "
                              "distillation: online (offline distils from a trained, frozen teacher)")
    if mode == "online":
        if kd_loss not in online_losses():
            raise KeyedValueError(f"{section_key}.kd_loss", f"distillation: online trains teacher and student "
                                  f"together with {' or '.join(online_losses())}, not {kd_loss!r}")
        if getattr(section, "feature_loss", None) is not None:
            raise KeyedValueError(f"{section_key}.feature_loss", "feature losses are not supported with "
                                  "distillation: online (use offline distillation)")
    elif mode != "offline":
        raise KeyedValueError("distillation", f"must be 'offline' or 'online', got {mode!r}")


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

    def __init__(self, distill: nn.Module, ce_weight: float = 1.0, kd_weight: float = 1.0,
                 kd_warmup_epochs: float = 0.0, feature_loss: nn.Module | None = None, feature_weight: float = 1.0,
                 student_feature_path: str = POOLED, teacher_feature_path: str | None = None) -> None:
        super().__init__()
        self.self_distilled = bool(getattr(distill, "uses_feature", False)) and not getattr(distill, "uses_teacher",
                                                                                             False)
        if not (getattr(distill, "uses_teacher", False) or self.self_distilled):
            raise TypeError(f"distill must be a distillation loss called (student, teacher, target), "
                            f"got {type(distill).__name__}")
        if feature_loss is not None and not getattr(feature_loss, "needs_teacher_features", False):
            raise TypeError(f"feature_loss must be a feature loss (nd, hint), got {type(feature_loss).__name__}")
        self.distill = distill
        self.ce_weight = check_non_negative(ce_weight, "ce_weight")
        self.kd_weight = check_non_negative(kd_weight, "kd_weight")
        self.kd_warmup_epochs = check_non_negative(kd_warmup_epochs, "kd_warmup_epochs")
        self.feature_loss = feature_loss
        self.feature_weight = check_non_negative(feature_weight, "feature_weight")
        self.student_feature_path = student_feature_path
        self.teacher_feature_path = teacher_feature_path or student_feature_path
        self.epoch = 0

    @property
    def uses_teacher(self) -> bool:  # type: ignore[override]
        """False for self-distillation without a feature term: no teacher at all."""
        return not self.self_distilled or self.feature_loss is not None

    @property
    def needs_student_features(self) -> bool:
        return self.self_distilled or self.feature_loss is not None

    @property
    def needs_teacher_features(self) -> bool:
        return self.feature_loss is not None

    @property
    def has_parameters(self) -> bool:
        return any(True for _ in self.parameters())

    def bind(self, student_shape: tuple[int, ...] | None = None, teacher_shape: tuple[int, ...] | None = None,
             num_classes: int | None = None) -> "StudentObjective":
        """Create the learned parts from the feature shapes (batch dimension included) and the class count."""
        if self.self_distilled:
            if student_shape is None or num_classes is None:
                raise ValueError(f"{type(self.distill).__name__} needs the student feature shape and num_classes")
            self.distill.bind(tuple(student_shape)[1], num_classes)
        if self.feature_loss is not None:
            if student_shape is None or teacher_shape is None:
                raise ValueError(f"{type(self.feature_loss).__name__} needs the student and teacher feature shapes")
            self.feature_loss.bind(tuple(student_shape), tuple(teacher_shape))
        return self

    def bind_models(self, student: nn.Module, teacher: nn.Module | None, example: torch.Tensor) -> "StudentObjective":
        """:meth:`bind` from one dry forward pass of each model on ``example`` (e.g. 2 images of training size)."""
        if not self.needs_student_features:
            return self
        student_shape, num_classes = _feature_shape(student, self.student_feature_path, example)
        teacher_shape = None
        if self.feature_loss is not None:
            if teacher is None:
                raise ValueError("a feature loss needs the teacher model")
            teacher_shape, _ = _feature_shape(getattr(teacher, "model", teacher), self.teacher_feature_path, example)
        return self.bind(student_shape, teacher_shape, num_classes)

    def tap(self, student: nn.Module) -> FeatureTaps | None:
        """Hooks on the student for the features this objective needs (None when it needs none)."""
        return FeatureTaps(student, (self.student_feature_path,)) if self.needs_student_features else None

    def feature_kwargs(self, taps: FeatureTaps | None, teacher: Any = None) -> dict[str, torch.Tensor]:
        """The ``student_features=`` / ``teacher_features=`` of the batch just run through the student (its
        ``taps``) and the teacher (a :class:`~kdcore.teacher.FrozenTeacher` or
        :class:`~kdcore.teacher_cache.CachedTeacher` built with ``features=(teacher_feature_path,)``)."""
        kwargs: dict[str, torch.Tensor] = {}
        if self.needs_student_features:
            kwargs["student_features"] = taps[self.student_feature_path]
        if self.needs_teacher_features:
            features = getattr(teacher, "features", {})
            if self.teacher_feature_path not in features:
                raise ValueError(f"the teacher gave no {self.teacher_feature_path!r} feature: build it with "
                                 f"features=({self.teacher_feature_path!r},)")
            kwargs["teacher_features"] = features[self.teacher_feature_path]
        return kwargs

    def set_class_means(self, means: torch.Tensor) -> None:
        """Give ND its class means (:func:`kdcore.losses.class_mean_embeddings` of the fold's training images)."""
        if not hasattr(self.feature_loss, "set_class_means"):
            raise TypeError(f"feature loss {type(self.feature_loss).__name__} takes no class means")
        self.feature_loss.set_class_means(means)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def kd_factor(self) -> float:
        if self.kd_warmup_epochs <= 0:
            return 1.0
        return min((self.epoch + 1) / self.kd_warmup_epochs, 1.0)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, target: torch.Tensor,
                student_features: torch.Tensor | None = None,
                teacher_features: torch.Tensor | None = None) -> torch.Tensor:
        if self.self_distilled:
            check_logits(student_logits, "student_logits")
            if student_features is None:
                raise ValueError(f"{type(self.distill).__name__} needs student_features "
                                 f"(the student's {self.student_feature_path!r} output)")
            kd = self.distill(student_logits, target, student_features)
        else:
            check_distill_inputs(student_logits, teacher_logits, target)
            kd = self.distill(student_logits, teacher_logits, target)
        ce = F.cross_entropy(compute_dtype(student_logits), target)
        total = self.ce_weight * ce + self.kd_weight * self.kd_factor * kd
        if self.feature_loss is not None:
            if student_features is None or teacher_features is None:
                raise ValueError(f"feature loss {type(self.feature_loss).__name__} needs student_features and "
                                 "teacher_features")
            total = total + self.feature_weight * self.feature_loss(student_features, teacher_features, target)
        return total

    def extra_repr(self) -> str:
        text = f"ce_weight={self.ce_weight}, kd_weight={self.kd_weight}, kd_warmup_epochs={self.kd_warmup_epochs}"
        if self.feature_loss is not None:
            text += f", feature_weight={self.feature_weight}, feature_path={self.student_feature_path!r}"
        return text


@torch.no_grad()
def _feature_shape(model: nn.Module, path: str, example: torch.Tensor) -> tuple[tuple[int, ...], int]:
    """Shape of ``model``'s output at ``path`` and its number of classes, from one eval-mode forward pass."""
    was_training = model.training
    model.eval()
    try:
        with FeatureTaps(model, (path,)) as taps:
            logits = model(example)
            shape = tuple(taps[path].shape)
    finally:
        model.train(was_training)
    return shape, int(logits.shape[-1])


def build_student_objective(section: DistillationSection) -> StudentObjective:
    """The objective of a (validated, hence resolved) student section.

    With ``feature_loss`` or ``kd_loss: uskd`` it has learned parts: call ``objective.bind_models(student,
    teacher_model, example_images)`` before training (and ``set_class_means`` for ND).
    """
    kwargs = dict(section.kd_loss_params)
    if section.temperature is not None:
        kwargs["temperature"] = section.temperature
    if section.kd_loss == "kd":
        kwargs["alpha"] = 0.0
    distill = build_loss(section.kd_loss, **kwargs)
    feature_loss = None
    if getattr(section, "feature_loss", None) is not None:
        feature_loss = build_loss(section.feature_loss, **dict(section.feature_params))
    return StudentObjective(distill, section.ce_weight, section.kd_weight, section.kd_warmup_epochs or 0.0,
                            feature_loss=feature_loss,
                            feature_weight=1.0 if section.feature_weight is None else section.feature_weight,
                            student_feature_path=getattr(section, "feature_path", None) or POOLED,
                            teacher_feature_path=getattr(section, "teacher_feature_path", None))
