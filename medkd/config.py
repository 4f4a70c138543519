"""The medkd recipe: typed sections with defaults; every key is checked (see kdcore.config)."""

from __future__ import annotations

from typing import Literal

from kdcore.config import (CVConfig, Field, RuntimeConfig, Section, Seed, TrainConfig, field_validator,
                           model_validator)

__all__ = ["OCTRecipe", "DataConfig", "SyntheticConfig", "AugmentConfig", "TeacherConfig", "StudentConfig",
           "BaselineConfig", "ReportConfig", "PrivacyConfig"]


class SyntheticConfig(Section):
    """The synthetic NEH-layout dataset made when ``data.format`` is ``synthetic`` and no root is given."""

    patients: int = Field(30, ge=2)
    seed: Seed = 0
    image_size: tuple[int, int] = (384, 248)
    scans_per_eye: tuple[int, int] = (2, 4)
    lesion_strength: float = Field(1.0, gt=0)
    noise: float = Field(1.0, ge=0)


class DataConfig(Section):
    format: Literal["neh", "oct2017", "manifest", "synthetic"] = "synthetic"
    root: str | None = Field(None, description="data root; --data-root sets it")
    subset: Literal["worst_case", "all"] = Field("worst_case", description="NEH: image label == patient class, or all")
    classes: list[str] | None = Field(None, description="class names in index order; default per format")
    evaluation: Literal["cv", "official_test"] = Field(
        "cv", description="cv: patient-level CV over all images; official_test: OCT2017's test folder, "
                          "training on train-folder patients that do not appear in test")
    image_size: int = Field(384, ge=32, description="square model input; B-scans are letterboxed, never squashed")
    on_bad_image: Literal["stop", "exclude"] = "stop"
    cache_decoded: bool = Field(False, description="keep decoded, letterboxed B-scans in memory (size^2 bytes each, "
                                                   "per DataLoader worker); identical numbers, faster epochs")
    near_duplicates: bool = Field(True, description="perceptual-hash duplicate check in the integrity gate")
    synthetic: SyntheticConfig = SyntheticConfig()


class AugmentConfig(Section):
    """Albumentations settings applied to the letterboxed B-scan (vertical flips stay off: orientation matters)."""

    hflip: float = Field(0.5, ge=0, le=1)
    vflip: float = Field(0.0, ge=0, le=1)
    rotate: float = Field(10.0, ge=0, le=180, description="max degrees")
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = Field(0.05, ge=0, le=0.5)
    brightness_contrast: float = Field(0.2, ge=0, le=1)
    gamma: float = Field(0.0, ge=0, le=1, description="probability of a random gamma change")
    blur: float = Field(0.0, ge=0, le=1, description="probability of a Gaussian blur")
    noise: float = Field(0.0, ge=0, le=1, description="probability of multiplicative (speckle-like) noise")
    posterize: float = Field(0.0, ge=0, le=1)
    erasing: float = Field(0.0, ge=0, le=1, description="probability of random erasing (CoarseDropout)")


class _ModelSection(Section):
    model: str
    pretrained: bool = Field(True, description="timm pretrained weights (hub cache or `weights`)")
    weights: str | None = Field(None, description="local weights file for machines without hub access")
    drop_path: float | None = Field(None, ge=0, lt=1)
    monitor: Literal["loss", "auc", "balanced_accuracy"] = "loss"
    tta: bool = Field(True, description="deterministic test-time augmentation: mean of original and h-flip")
    train: TrainConfig = TrainConfig()
    augment: AugmentConfig = AugmentConfig()


class TeacherConfig(_ModelSection):
    model: str = "convnextv2_large.fcmae_ft_in22k_in1k"
    loss: Literal["focal", "ce"] = "focal"
    focal_gamma: float = Field(2.0, ge=0)
    class_weights: Literal["balanced", "none"] = "balanced"


class StudentConfig(_ModelSection):
    model: str = "efficientnet_b2"
    kd_loss: str = Field("kd", description="any loss of kdcore.losses.list_losses() that uses a teacher")
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.3, ge=0, le=1, description="weight of the hard-label cross-entropy")
    kd_loss_params: dict[str, float] = Field(default_factory=dict, description="extra arguments of kd_loss")
    teacher_cache: Literal["off", "views", "pool"] = Field(
        "off", description="teacher outputs computed once per fold (run folder, kdcore.teacher_cache): views = "
                           "every (epoch, sample) view, same predictions as online KD; pool = FKD-style fixed pool "
                           "of teacher_cache_views views per image (an approximation)")
    teacher_cache_views: int = Field(8, ge=1, description="pool: augmented views kept per image")
    teacher_cache_dtype: Literal["auto", "float16", "float32"] = Field(
        "auto", description="cache storage; auto = float16 when the teacher runs under 16-bit autocast "
                            "(lossless), else float32")

    @field_validator("kd_loss")
    @classmethod
    def _known_distillation_loss(cls, name: str) -> str:
        from kdcore.losses import distillation_losses

        if name not in distillation_losses():
            raise ValueError(f"unknown distillation loss {name!r} (known: {', '.join(distillation_losses())})")
        return name


class BaselineConfig(Section):
    """The student architecture and training without a teacher (cross-entropy only)."""

    enabled: bool = True


class ReportConfig(Section):
    bootstrap: int = Field(1000, ge=0, description="patient-level bootstrap resamples for 95% CIs")
    latency_runs: int = Field(10, ge=1)


class PrivacyConfig(Section):
    hash_patient_ids: bool | None = Field(
        None, description="replace patient ids by salted hashes in reports, logs and exports; None = on for NEH")
    salt: str | None = Field(None, description="hash salt; None = a random salt kept in the run folder")


class OCTRecipe(Section):
    name: str = "kd_oct"
    seed: Seed = 0
    data: DataConfig = DataConfig()
    cv: CVConfig = CVConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    baseline: BaselineConfig = BaselineConfig()
    report: ReportConfig = ReportConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    @model_validator(mode="after")
    def _check(self) -> "OCTRecipe":
        if self.data.evaluation == "official_test" and self.data.format != "oct2017":
            raise ValueError("data.evaluation: official_test needs data.format oct2017")
        return self
