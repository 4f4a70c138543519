"""facekd as a kdcore vertical: Fard & Mahoor's roles (Tough and Tolerant teachers, a KD-Loss student from both,
an L2 baseline), subject-level folds, face crops, the landmark task and prediction rows. kdcore runs the rest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from kdcore.cv import FoldManifest
from kdcore.feature_term import FeatureTerm, build_feature_term
from kdcore.models import ModelMeta
from kdcore.run_folder import RunDir
from kdcore.fold_runner import FoldContext
from kdcore.vertical import FoldSets, Role, Vertical

from .augment import build_train_augment
from .config import FaceRecipe, ModelConfig
from .dataset import FaceCropDataset
from .formats import FaceRecord
from .kd_loss import LandmarkKDLoss
from .preprocess import FACE_MEAN, FACE_STD, to_image_points
from .schemes import get_scheme
from .tasks import LandmarkTask, predict_landmarks

__all__ = ["FaceVertical", "FACES", "FaceData", "init_head_to_mean_shape"]


@dataclass
class FaceData:
    """The faces a run may use (after the integrity gate) and the folder they were read from."""

    records: list[FaceRecord]
    root: Path

    @property
    def n_points(self) -> int:
        return self.records[0].n_points


def init_head_to_mean_shape(model: torch.nn.Module, mean_target: np.ndarray) -> None:
    """Bias of the regression head = the mean normalised training shape; weights scaled down so the first
    predictions start near it (the network then learns each face's offset from the mean shape)."""
    head = model.get_classifier()
    if head.bias is None or head.bias.shape != (mean_target.size,):
        raise ValueError(f"head bias {None if head.bias is None else tuple(head.bias.shape)} does not fit a mean "
                         f"shape of {mean_target.size} values")
    with torch.no_grad():
        head.bias.copy_(torch.as_tensor(mean_target, dtype=head.bias.dtype))
        head.weight.mul_(0.1)


def _augment(recipe: FaceRecipe, cfg: ModelConfig, n_points: int):
    a = cfg.augment
    return build_train_augment(recipe.data.image_size, get_scheme(n_points), flip_p=a.flip, rotate=a.rotate,
                               scale=tuple(a.scale), translate=a.translate, affine_p=1.0 if (a.rotate or a.translate
                               or tuple(a.scale) != (1.0, 1.0)) else 0.0, colour_p=a.colour, blur_p=a.blur,
                               occlusion_p=a.occlusion)


def record_size(record: FaceRecord) -> tuple[int, int]:
    from .formats import load_face_image

    image = load_face_image(record)
    return int(image.shape[1]), int(image.shape[0])


class FaceVertical(Vertical):
    name, group_name, counts_key, teacher_names = "facekd", "subject", "faces", ("tough", "tolerant")

    def roles(self, recipe: FaceRecipe) -> list[Role]:
        roles = [Role("tough", "tough"), Role("tolerant", "tolerant"),
                 Role("student", "student", ("tough", "tolerant"), kind="student")]
        if recipe.baseline.enabled:
            roles.append(Role("baseline", "student", kind="baseline"))  # the student's network, L2 only
        return roles

    def n_folds(self, recipe: FaceRecipe) -> int:
        return 1 if recipe.data.evaluation == "official" else recipe.cv.folds

    def prepare_data(self, recipe: FaceRecipe, run: RunDir) -> FaceData:
        from .data_prep import prepare_faces

        return FaceData(*prepare_faces(recipe, run))

    def build_manifest(self, recipe: FaceRecipe, data: FaceData) -> FoldManifest:
        from .data_prep import build_manifest

        return build_manifest(recipe, data.records)

    def write_dataset_index(self, run: RunDir, data: FaceData) -> None:
        from .data_prep import write_dataset_index

        write_dataset_index(run, data.records, data.root)

    def model_meta(self, recipe: FaceRecipe, role: Role, data: FaceData, fold: int,
                   manifest_sha: str) -> ModelMeta:
        n_points = data.n_points
        return ModelMeta(self.role_config(recipe, role).model, num_outputs=2 * n_points, in_chans=3, task="landmarks",
                         role=role.name, fold=fold, manifest=manifest_sha, recipe=recipe.name,
                         extra={"n_points": n_points, "scheme": get_scheme(n_points).name},
                         input={"size": recipe.data.image_size, "channels": 3, "mean": list(FACE_MEAN),
                                "std": list(FACE_STD), "crop_margin": recipe.data.crop_margin, "colour": "rgb",
                                "output": "x0, y0, x1, y1, ... in crop coordinates divided by the input size"})

    def input_shape(self, recipe: FaceRecipe, data: Any) -> tuple[int, ...]:
        return (3, recipe.data.image_size, recipe.data.image_size)

    def fold_sets(self, recipe: FaceRecipe, role: Role, data: FaceData, ctx: FoldContext) -> FoldSets:
        parts = {part: [r for r in data.records if r.subject in set(getattr(ctx.split, part))]
                 for part in ("train", "val", "test")}
        size, margin = recipe.data.image_size, recipe.data.crop_margin
        train_targets = val_targets = None
        info: dict[str, Any] = {}
        if role.name == "tolerant":  # trained on ASM-softened landmarks of the fold's training faces only
            from .soft_targets import soften_records

            asm, (train_targets, val_targets) = soften_records(parts["train"], [parts["val"]], recipe.asm, size,
                                                               margin)
            info["asm_components"] = int(asm.n_components_)
        augment = _augment(recipe, self.role_config(recipe, role), data.n_points)
        return FoldSets(train=FaceCropDataset(parts["train"], size, margin, train_targets, augment),
                        val=FaceCropDataset(parts["val"], size, margin, val_targets),
                        test=FaceCropDataset(parts[ctx.evaluate], size, margin),
                        counts={k: len(v) for k, v in parts.items()}, info=info)

    def init_model(self, recipe: FaceRecipe, role: Role, model: torch.nn.Module, sets: FoldSets) -> None:
        if self.role_config(recipe, role).mean_shape_init:
            init_head_to_mean_shape(model, sets.train.mean_target())

    def monitor(self, recipe: FaceRecipe, role: Role) -> tuple[str, Literal["min", "max"]]:
        return "nme", "min"

    def objective(self, recipe: FaceRecipe, role: Role) -> FeatureTerm | None:
        # Hints come from the first required teacher, the tough one (trained on the true landmarks; the
        # tolerant teacher's targets are ASM-softened).
        return build_feature_term(recipe.student) if role.kind == "student" else None

    def task(self, recipe: FaceRecipe, role: Role, sets: FoldSets, val_loader: Any, device: torch.device,
             teachers: dict[str, Any], objective: FeatureTerm | None = None, taps: Any = None) -> LandmarkTask:
        if not teachers:
            return LandmarkTask(val_loader, device)
        return LandmarkTask(val_loader, device, teachers, LandmarkKDLoss(**recipe.student.kd.model_dump()),
                            feature_term=None if objective is None else objective.to(device), taps=taps)

    def cache_identity(self, recipe: FaceRecipe) -> dict[str, Any]:
        data = recipe.data
        return {"image_size": data.image_size, "crop_margin": data.crop_margin, "mean": list(FACE_MEAN),
                "std": list(FACE_STD)}

    def predict(self, recipe: FaceRecipe, role: Role, model: torch.nn.Module, sets: FoldSets, loader: Any,
                ctx: FoldContext, device: torch.device, amp_dtype: torch.dtype | None) -> tuple[list[dict], list[str]]:
        from .data_prep import subset_tags

        size, test = recipe.data.image_size, sets.test
        pred, _, matrices, indices = predict_landmarks(model, loader, device, amp_dtype)
        n_points = pred.shape[1] // 2
        rows = []
        for output, matrix, position in zip(pred, matrices, indices):
            record = test.records[position]
            points = to_image_points(output, matrix, size)
            width, height = record_size(record)
            row = {"id": record.record_id, "subject": record.subject, "fold": ctx.fold, "subset": subset_tags(record),
                   "width": width, "height": height}
            row.update({f"{axis}{i}": float(points[i, j]) for i in range(n_points) for j, axis in enumerate("xy")})
            row.update({f"g{axis}{i}": float(record.landmarks[i, j]) for i in range(n_points)
                        for j, axis in enumerate("xy")})
            rows.append(row)
        columns = ["id", "subject", "fold", "subset", "width", "height"]
        columns += [f"{axis}{i}" for i in range(n_points) for axis in "xy"]
        columns += [f"g{axis}{i}" for i in range(n_points) for axis in "xy"]
        return rows, columns

    def build_report(self, run_dir: str | Path, n_boot: int | None = None, seed: int = 0) -> dict:
        from .report import build_report

        return build_report(run_dir, n_boot=n_boot, seed=seed)


FACES = FaceVertical()
