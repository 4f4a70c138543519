"""The medkd recipe: typed sections with defaults; every key is checked (see kdcore.config)."""

from __future__ import annotations

from typing import ClassVar, Literal

from kdcore.config import (CVConfig, Field, RuntimeConfig, Section, Seed, TeacherCacheSection, TrainConfig,
                           field_validator, model_validator)
from kdcore.config import KeyedValueError
from kdcore.objective import DistillationMode, DistillationSection, needs_teacher, validate_distillation_mode

__all__ = ["OCTRecipe", "DataConfig", "SyntheticConfig", "AugmentConfig", "RandAugmentConfig", "TeacherConfig",
           "StudentConfig",
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
    format: Literal["neh", "oct2017", "manifest", "volumes", "synthetic"] = "synthetic"
    root: str | None = Field(None, description="data root; --data-root sets it")
    subset: Literal["worst_case", "all"] = Field("worst_case", description="NEH: image label == patient class, or all")
    classes: list[str] | None = Field(None, min_length=2, description="class names in index order (at least two); "
                                                                     "default per format")
    evaluation: Literal["cv", "official_test"] = Field(
        "cv", description="cv: patient-level CV over all images; official_test: OCT2017's test folder, "
                          "training on train-folder patients that do not appear in test")
    image_size: int = Field(384, ge=32, description="square model input; B-scans are letterboxed, never squashed")
    on_bad_image: Literal["stop", "exclude"] = "stop"
    cache_decoded: bool = Field(False, description="keep decoded, letterboxed B-scans in memory (size^2 bytes each, "
                                                   "per DataLoader worker); identical numbers, faster epochs")
    near_duplicates: bool = Field(True, description="perceptual-hash duplicate check in the integrity gate")
    synthetic: SyntheticConfig = SyntheticConfig()
    # data.format volumes (DICOM OPT and vendor exports, see data_cards/dicom_and_vendor.md)
    bscans: str | dict[str, int] = Field("all", description="B-scans used per volume: all, central, "
                                                           "{central_k: K} (K around the centre), {every: N}")
    labels: str | None = Field(None, description="volumes: labels CSV relative to the root (default labels.csv)")
    volume_aggregate: Literal["max", "mean", "topk-mean"] = Field(
        "mean", description="how `medkd predict` turns B-scan probabilities into one per volume (export default)")
    volume_topk: int = Field(3, ge=1, description="k of topk-mean")

    @field_validator("bscans")
    @classmethod
    def _known_selection(cls, value: str | dict[str, int]) -> str | dict[str, int]:
        from .data.volumes import parse_selection

        try:
            parse_selection(value)
        except Exception as exc:  # ConfigError -> a pydantic error naming the key
            raise ValueError(str(exc).removeprefix("data.bscans: ")) from None
        return value


RandAugmentOp = Literal["brightness", "contrast", "saturation", "sharpness", "rotate", "translate"]


class RandAugmentConfig(Section):
    """KD-OCT's RandAugmentTransform: ``n`` distinct ops drawn from ``ops``, each at +-magnitude/30 (a factor
    1 +- m/30 for brightness, contrast, sharpness) or +-``rotate`` degrees. Saturation does nothing on a grey
    B-scan and KD-OCT's translate moves m/100 of a pixel (no visible change); both are kept so the draw of the
    other ops has the authors' odds."""

    n: int = Field(2, ge=1)
    magnitude: float = Field(9.0, ge=0, le=30)
    rotate: float = Field(9.0, ge=0, le=180, description="degrees of the rotate op (KD-OCT: m/30 * 30 teacher, "
                                                          "m/30 * 20 student)")
    ops: list[RandAugmentOp] = ["brightness", "contrast", "saturation", "sharpness", "rotate", "translate"]

    @model_validator(mode="after")
    def _check(self) -> "RandAugmentConfig":
        if self.n > len(self.ops):
            raise ValueError(f"n ({self.n}) is more than the {len(self.ops)} ops listed")
        return self


class AugmentConfig(Section):
    """Albumentations settings applied to the letterboxed B-scan (vertical flips stay off: orientation matters)."""

    randaugment: RandAugmentConfig | None = Field(None, description="KD-OCT's RandAugment, applied first; None = off")
    hflip: float = Field(0.5, ge=0, le=1)
    vflip: float = Field(0.0, ge=0, le=1)
    rotate: float = Field(10.0, ge=0, le=180, description="max degrees")
    scale: tuple[float, float] = (0.9, 1.1)
    shear: float = Field(0.0, ge=0, le=90, description="max degrees of shear")
    translate: float = Field(0.05, ge=0, le=0.5)
    brightness_contrast: float = Field(0.2, ge=0, le=1)
    gamma: float = Field(0.0, ge=0, le=1, description="probability of a random gamma change")
    blur: float = Field(0.0, ge=0, le=1, description="probability of a Gaussian blur")
    blur_kernel: tuple[int, int] = Field((3, 5), description="odd kernel sizes of the blur (KD-OCT: 3)")
    noise: float = Field(0.0, ge=0, le=1, description="probability of multiplicative (speckle-like) noise")
    posterize: float = Field(0.0, ge=0, le=1)
    posterize_bits: tuple[int, int] = Field((4, 6), description="bits kept by posterize (KD-OCT: 4)")
    erasing: float = Field(0.0, ge=0, le=1, description="probability of random erasing")
    erasing_scale: tuple[float, float] | None = Field(
        None, description="None: 1-3 holes of 5-20 % per side (CoarseDropout); a range: one rectangle of that share "
                          "of the image, aspect 0.3-3.3, as torchvision's RandomErasing (KD-OCT: 0.02-0.15 teacher, "
                          "0.02-0.1 student)")


class _ModelSection(Section):
    model: str
    pretrained: bool = Field(True, description="timm pretrained weights (hub cache or `weights`)")
    weights: str | None = Field(None, description="local weights file for machines without hub access")
    drop_path: float | None = Field(None, ge=0, lt=1)
    dropout: float | None = Field(None, ge=0, lt=1, description="dropout before the classifier (timm's drop_rate); "
                                                               "None = the architecture's default")
    monitor: Literal["loss", "auc", "balanced_accuracy", "accuracy"] = "loss"
    tta: bool = Field(True, description="deterministic test-time augmentation: mean of the original and tta_views")
    tta_views: list[Literal["hflip", "vflip", "zoom", "rotate"]] = Field(
        ["hflip"], min_length=1, description="views averaged with the original: mirror, vertical flip, 1.1x centre "
                                             "zoom, rotation by a fixed per-image angle in +-5 degrees")
    train: TrainConfig = TrainConfig()
    augment: AugmentConfig = AugmentConfig()


class TeacherConfig(_ModelSection):
    enabled: bool = Field(True, description="train a teacher; false only for a teacher-free student "
                                            "(student.kd_loss: uskd)")
    model: str = "convnextv2_large.fcmae_ft_in22k_in1k"
    loss: Literal["focal", "ce"] = "focal"
    focal_gamma: float = Field(2.0, ge=0)
    focal_normalize: Literal["weights", "batch"] = Field(
        "weights", description="divide the summed focal loss by the summed class weights of the batch (as weighted "
                               "cross-entropy does) or by the batch size (as KD-OCT's code does)")
    class_weights: Literal["balanced", "none"] = "balanced"


class StudentConfig(DistillationSection, TeacherCacheSection, _ModelSection):
    """The distilled student: objective = ce_weight * CE + kd_weight * distillation (see kdcore.objective)."""

    model: str = "efficientnet_b2"


class BaselineConfig(Section):
    """The student architecture and training without a teacher (cross-entropy only)."""

    enabled: bool = True


class ReportConfig(Section):
    bootstrap: int = Field(1000, ge=0, description="patient-level bootstrap resamples for 95% CIs")
    latency_runs: int = Field(10, ge=1)


class PrivacyConfig(Section):
    hash_patient_ids: bool | None = Field(
        None, description="replace patient ids by salted hashes in reports, logs and exports; None = on for NEH")
    salt: str | None = Field(None, description="hash key; None = $KDVISION_PRIVACY_SALT, else derived from the "
                                                "bytes of the images (the same for every run of the same data)")


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
    distillation: DistillationMode = Field(
        "offline", description="offline: the student distils from a trained, frozen teacher; online: teacher and "
                               "student trained together on the same batches (student.kd_loss dml or bdkd)")

    # Which trained models a changed section invalidates (a resume retrains those, keeps the rest); a section
    # not listed (data, cv, seed, privacy...) changes every model.
    SECTION_MODELS: ClassVar[dict[str, tuple[str, ...]]] = {
        "name": (), "report": (), "teacher": ("teacher", "student"), "student": ("student", "baseline"),
        "baseline": ("baseline",)}

    @model_validator(mode="after")
    def _check(self) -> "OCTRecipe":
        if self.data.evaluation == "official_test" and self.data.format != "oct2017":
            raise ValueError("data.evaluation: official_test needs data.format oct2017")
        validate_distillation_mode(self.distillation, self.student)
        if not self.teacher.enabled and (self.distillation == "online" or needs_teacher(self.student)):
            raise KeyedValueError("teacher.enabled", f"false needs a teacher-free student (student.kd_loss: uskd, no "
                                  f"feature_loss); student.kd_loss {self.student.kd_loss!r}"
                                  + (f" with feature_loss {self.student.feature_loss!r}" if self.student.feature_loss
                                     else "") + (" online" if self.distillation == "online" else "")
                                  + " distils from a teacher")
        if self.distillation == "online" and self.student.teacher_cache != "off":
            raise KeyedValueError("student.teacher_cache", "must be off with distillation: online (a teacher trained "
                                  "together with the student has no fixed outputs to cache)")
        return self
