"""The facekd recipe: typed sections with defaults; every key is checked (see kdcore.config)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from kdcore.config import (CVConfig, Field, KeyedValueError, RuntimeConfig, Section, Seed, TeacherCacheSection,
                           TrainConfig, model_validator)
from kdcore.features import POOLED
from kdcore.objective import resolve_feature_loss

from .kd_loss import CODE_CONSTANTS as _KD

__all__ = ["FaceRecipe", "FaceDataConfig", "FaceAugmentConfig", "ModelConfig", "StudentKDConfig", "ASMConfig"]


class SyntheticFacesConfig(Section):
    faces: int = Field(240, ge=4)
    subjects: int | None = Field(None, ge=2, description="distinct identities; default faces // 4")
    seed: Seed = 0
    image_size: tuple[int, int] = (256, 256)


class FaceDataConfig(Section):
    format: Literal["300w", "wflw", "cofw", "folder", "synthetic"] = "synthetic"
    root: str | None = Field(None, description="data root; --data-root sets it")
    evaluation: Literal["cv", "official"] = Field(
        "cv", description="cv: k-fold grouped by subject; official: the dataset's train split vs its test splits")
    train_split: str | None = Field(None, description="official: training split (default per format)")
    test_splits: list[str] | None = Field(None, description="official: test splits reported separately")
    image_size: int = Field(224, ge=32, description="square crop fed to the models")
    crop_margin: float = Field(0.25, ge=0, le=1, description="margin around the landmark box, per side")
    on_bad_image: Literal["stop", "exclude"] = "stop"
    synthetic: SyntheticFacesConfig = SyntheticFacesConfig()


class FaceAugmentConfig(Section):
    flip: float = Field(0.5, ge=0, le=1, description="horizontal flip with the left/right landmark permutation")
    rotate: float = Field(30.0, ge=0, le=180)
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = Field(0.05, ge=0, le=0.5)
    colour: float = Field(0.8, ge=0, le=1, description="probability of a colour jitter")
    blur: float = Field(0.2, ge=0, le=1)
    occlusion: float = Field(0.3, ge=0, le=1, description="probability of occluding patches")


class FaceTrainConfig(TrainConfig):
    """Fard & Mahoor's training: Adam at 1e-3, batch 70, 150 epochs (the engine's fields, other defaults). Their
    Keras Adam(decay=1e-4) is an lr decay, `schedule: inverse_time` with `lr_decay: 1e-4` (set in the paper recipes)."""

    optimizer: Literal["adamw", "adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(70, ge=1)
    epochs: int = Field(150, ge=1)


class ModelConfig(Section):
    model: str
    pretrained: bool = True
    weights: str | None = None
    drop_path: float | None = Field(None, ge=0, lt=1)
    dropout: float | None = Field(None, ge=0, lt=1, description="dropout before the regression head (timm's "
                                                               "drop_rate); None = the architecture's default")
    mean_shape_init: bool = Field(
        False, description="start the regression head at the mean training shape (bias = mean target, weights "
                           "x0.1), as cascaded shape regression does; much faster convergence from scratch")
    train: FaceTrainConfig = FaceTrainConfig()
    augment: FaceAugmentConfig = FaceAugmentConfig()


class StudentKDConfig(Section):
    """Constants of the KD-Loss (facekd.kd_loss.LandmarkKDLoss); defaults are the published code's
    (``facekd.kd_loss.CODE_CONSTANTS``, their one source)."""

    main_slope: float = Field(_KD["main_slope"], gt=0)
    boundary_fraction: float = Field(_KD["boundary_fraction"], gt=0, le=1)
    tough_pos_weight: float = _KD["tough_pos_weight"]
    tough_neg_weight: float = _KD["tough_neg_weight"]
    tol_pos_weight: float = _KD["tol_pos_weight"]
    tol_neg_weight: float = _KD["tol_neg_weight"]
    ramp: bool = _KD["ramp"]
    main_weight: float = Field(_KD["main_weight"], ge=0)
    tough_weight: float = Field(_KD["tough_weight"], ge=0)
    tol_weight: float = Field(_KD["tol_weight"], ge=0)


# Student keys of the classification vertical that have no meaning for landmark regression, and why.
CLASSIFICATION_ONLY = {
    "kd_loss": "logit distillation losses (kd, dkd, nkd, uskd, dml, bdkd) are for classifiers; facekd's student "
               "distils landmarks with the KD-Loss (student.kd) and may add student.feature_loss: hint",
    "kd_loss_params": "facekd's KD-Loss constants are student.kd",
    "temperature": "facekd's KD-Loss has no temperature (its constants are student.kd)",
    "alpha": "facekd's KD-Loss weights are student.kd.main_weight, tough_weight, tol_weight",
}


class StudentConfig(TeacherCacheSection, ModelConfig):
    model: str = "mobilenetv2_100"
    kd: StudentKDConfig = StudentKDConfig()
    feature_loss: str | None = Field(None, description="hint: FitNets hints on the tough teacher's pooled embedding "
                                                       "beside the KD-Loss; None = off")
    feature_weight: float | None = Field(None, ge=0, description="weight of the hint term; None = FitNets' 1.0")
    feature_params: dict[str, float] = Field(default_factory=dict, description="extra arguments of feature_loss")
    feature_path: str | None = Field(None, description="student feature: 'pooled', 'stage:<i>' or a module path")
    teacher_feature_path: str | None = Field(None, description="the tough teacher's feature; None = feature_path")

    @model_validator(mode="before")
    @classmethod
    def _refuse_classification_keys(cls, data: Any) -> Any:
        for key in CLASSIFICATION_ONLY if isinstance(data, dict) else ():
            if key in data:
                raise KeyedValueError(key, f"not a facekd key: {CLASSIFICATION_ONLY[key]}")
        return data

    @model_validator(mode="after")
    def _resolve_feature_term(self) -> "StudentConfig":
        if self.feature_loss == "nd":
            raise KeyedValueError("feature_loss", "nd pulls a classifier's embedding towards the teacher's class "
                                  "means: classification only (facekd has no classes); use hint")
        resolved = resolve_feature_loss(self.feature_loss, self.feature_weight, self.feature_params)
        if resolved["feature_loss"] is not None and self.feature_path is None:
            resolved["feature_path"] = POOLED
        for key, value in resolved.items():
            if getattr(self, key) != value:
                object.__setattr__(self, key, value)  # checked above; a validated assignment would re-enter
                self.__pydantic_fields_set__.add(key)
        return self


class ASMConfig(Section):
    variance: float = Field(0.95, gt=0, le=1)
    clip: float | None = Field(3.0, gt=0)
    align: bool = False


class BaselineConfig(Section):
    enabled: bool = True


class FaceReportConfig(Section):
    bootstrap: int = Field(1000, ge=0)
    latency_runs: int = Field(10, ge=1)


class FaceRecipe(Section):
    name: str = "face_kd"
    seed: Seed = 0
    data: FaceDataConfig = FaceDataConfig()
    cv: CVConfig = CVConfig(folds=5, val_fraction=0.1)
    asm: ASMConfig = ASMConfig()
    tough: ModelConfig = ModelConfig(model="efficientnet_b3")
    tolerant: ModelConfig = ModelConfig(model="efficientnet_b3")
    student: StudentConfig = StudentConfig()
    baseline: BaselineConfig = BaselineConfig()
    report: FaceReportConfig = FaceReportConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    @model_validator(mode="before")
    @classmethod
    def _refuse_online(cls, data: Any) -> Any:
        # medkd's top-level key, accepted here only as its default (facekd always distils offline)
        if isinstance(data, dict) and data.get("distillation", "offline") == "offline":
            return {k: v for k, v in data.items() if k != "distillation"}
        if isinstance(data, dict):
            raise KeyedValueError("distillation", f"{data['distillation']!r}: online distillation (dml, bdkd) trains "
                                  "a pair of classifiers together: classification only; facekd distils offline "
                                  "from its tough and tolerant teachers")
        return data

    # Which trained models a changed section invalidates (a resume retrains those, keeps the rest).
    SECTION_MODELS: ClassVar[dict[str, tuple[str, ...]]] = {
        "name": (), "report": (), "tough": ("tough", "student"), "tolerant": ("tolerant", "student"),
        "student": ("student", "baseline"), "baseline": ("baseline",)}

    @model_validator(mode="after")
    def _check(self) -> "FaceRecipe":
        if self.data.evaluation == "official" and self.data.format in ("folder", "synthetic"):
            raise ValueError("data.evaluation: 'official' needs a dataset with official splits (300w, wflw, cofw)")
        return self
