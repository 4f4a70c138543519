"""medkd as a kdcore vertical: KD-OCT's roles (focal-loss teacher, distilled student, no-KD baseline), its
patient-level folds, B-scan datasets, classification task and prediction rows. kdcore runs the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from kdcore.cv import FoldManifest
from kdcore.losses import CrossEntropyLoss, FocalLoss, balanced_class_weights
from kdcore.models import ModelMeta
from kdcore.objective import StudentObjective, build_student_objective, needs_teacher
from kdcore.online import OnlineTask, build_online_objective
from kdcore.run_folder import RunDir
from kdcore.fold_runner import FoldContext
from kdcore.vertical import FoldSets, Role, Vertical

from .config import OCTRecipe
from .data import OCTDataset
from .dataset import BScanDataset
from .official import select_records
from .preprocess import OCT_MEAN, OCT_STD
from .tasks import ClassificationTask, predict_probabilities
from .transforms import build_augment

__all__ = ["OCTVertical", "OCT", "MONITOR_MODE", "oct_network"]
MONITOR_MODE: dict[str, Literal["min", "max"]] = {"loss": "min", "auc": "max", "balanced_accuracy": "max",
                                                   "accuracy": "max"}


class OCTVertical(Vertical):
    name, group_name, counts_key, teacher_names = "medkd", "patient", "images", ("teacher",)

    def roles(self, recipe: OCTRecipe) -> list[Role]:
        online = recipe.distillation == "online"
        roles = []
        if recipe.teacher.enabled:  # a teacher-free student's enabled teacher is trained for comparison only
            roles.append(Role("teacher", "teacher", trained_with="student" if online else None))
        requires = ("teacher",) if needs_teacher(recipe.student) and not online else ()
        roles.append(Role("student", "student", requires, kind="student"))
        if recipe.baseline.enabled:
            roles.append(Role("baseline", "student", kind="baseline"))  # the student's network, without a teacher
        return roles

    def n_folds(self, recipe: OCTRecipe) -> int:
        return 1 if recipe.data.evaluation == "official_test" else recipe.cv.folds

    def prepare_data(self, recipe: OCTRecipe, run: RunDir) -> OCTDataset:
        from .data_prep import prepare_dataset

        return prepare_dataset(recipe, run)

    def build_manifest(self, recipe: OCTRecipe, data: OCTDataset) -> FoldManifest:
        from .data_prep import build_manifest

        return build_manifest(recipe, data)

    def write_dataset_index(self, run: RunDir, data: OCTDataset) -> None:
        from .data_prep import write_dataset_index

        write_dataset_index(run, data)

    def model_meta(self, recipe: OCTRecipe, role: Role, data: OCTDataset, fold: int, manifest_sha: str) -> ModelMeta:
        return ModelMeta(self.role_config(recipe, role).model, num_outputs=len(data.classes), in_chans=1,
                         task="classification", role=role.name, fold=fold, manifest=manifest_sha, recipe=recipe.name,
                         extra={"classes": list(data.classes)},
                         input={"size": recipe.data.image_size, "channels": 1, "mean": list(OCT_MEAN),
                                "std": list(OCT_STD), "resize": "letterbox", "pad_value": 0, "colour": "gray"})

    def input_shape(self, recipe: OCTRecipe, data: OCTDataset) -> tuple[int, ...]:
        return (1, recipe.data.image_size, recipe.data.image_size)

    def fold_sets(self, recipe: OCTRecipe, role: Role, data: OCTDataset, ctx: FoldContext) -> FoldSets:
        official = recipe.data.evaluation == "official_test"
        parts = {part: select_records(data, set(getattr(ctx.split, part)), part, official)
                 for part in ("train", "val", "test")}
        size, cache, classes = recipe.data.image_size, recipe.data.cache_decoded, data.classes
        augment = build_augment(self.role_config(recipe, role).augment)
        return FoldSets(train=BScanDataset(parts["train"], classes, size, augment, cache_decoded=cache),
                        val=BScanDataset(parts["val"], classes, size, cache_decoded=cache),
                        test=BScanDataset(parts[ctx.evaluate], classes, size, cache_decoded=cache),
                        counts={part: len(records) for part, records in parts.items()})

    def monitor(self, recipe: OCTRecipe, role: Role) -> tuple[str, Literal["min", "max"]]:
        monitor = self.role_config(recipe, role).monitor
        return monitor, MONITOR_MODE[monitor]

    def objective(self, recipe: OCTRecipe, role: Role) -> StudentObjective | None:
        return build_student_objective(recipe.student) if role.kind == "student" else None

    @staticmethod
    def _teacher_loss(recipe: OCTRecipe, sets: FoldSets) -> torch.nn.Module:
        cfg, classes = recipe.teacher, sets.train.classes
        weights = (balanced_class_weights(sets.train.targets, len(classes)).tolist()
                   if cfg.class_weights == "balanced" else None)
        return (FocalLoss(gamma=cfg.focal_gamma, class_weights=weights, normalize=cfg.focal_normalize)
                if cfg.loss == "focal" else CrossEntropyLoss(class_weights=weights))

    def task(self, recipe: OCTRecipe, role: Role, sets: FoldSets, val_loader: Any, device: torch.device,
             teachers: dict[str, Any], objective: StudentObjective | None = None,
             taps: Any = None) -> ClassificationTask:
        classes = sets.train.classes
        if role.kind == "teacher":
            loss = self._teacher_loss(recipe, sets)
        elif role.kind == "baseline":
            loss = CrossEntropyLoss()
        else:
            loss = objective if objective is not None else build_student_objective(recipe.student)
        return ClassificationTask(loss.to(device), val_loader, classes, device, teachers.get("teacher"), taps=taps)

    def online_task(self, recipe: OCTRecipe, role: Role, partner: Role, sets: FoldSets, val_loader: Any,
                    device: torch.device) -> OnlineTask:
        # The teacher keeps its own hard-label loss (focal or CE, class weights) beside the peer term.
        objective = build_online_objective(recipe.student, self._teacher_loss(recipe, sets)).to(device)
        validate = ClassificationTask(CrossEntropyLoss(), val_loader, sets.train.classes, device).validate
        return OnlineTask(objective, validate)

    def cache_identity(self, recipe: OCTRecipe) -> dict[str, Any]:
        return {"image_size": recipe.data.image_size, "mean": list(OCT_MEAN), "std": list(OCT_STD)}

    def predict(self, recipe: OCTRecipe, role: Role, model: torch.nn.Module, sets: FoldSets, loader: Any,
                ctx: FoldContext, device: torch.device, amp_dtype: torch.dtype | None) -> tuple[list[dict], list[str]]:
        cfg, classes = self.role_config(recipe, role), sets.test.classes
        probs, indices = predict_probabilities(model, loader, device, tta=cfg.tta and cfg.tta_views,
                                               amp_dtype=amp_dtype)
        rows = []
        for position, p in zip(indices, probs):
            record = sets.test.records[position]
            row = {"id": record.image_id, "patient": record.patient, "eye": record.eye or "", "fold": ctx.fold,
                   "target": record.label, "pred": classes[int(p.argmax())]}
            row.update({f"prob_{name}": float(value) for name, value in zip(classes, p)})
            rows.append(row)
        return rows, ["id", "patient", "eye", "fold", "target", "pred"] + [f"prob_{c}" for c in classes]

    def build_report(self, run_dir: str | Path, n_boot: int | None = None, seed: int = 0) -> dict:
        from .report import build_report

        return build_report(run_dir, n_boot=n_boot, seed=seed)


OCT = OCTVertical()


def oct_network(recipe: OCTRecipe, role: str, classes: list[str]) -> torch.nn.Module:
    """The untrained network of ``role`` (``teacher`` or ``student``) for ``classes`` (benchmarks, tests)."""
    from types import SimpleNamespace

    from kdcore.models import build_model

    meta = OCT.model_meta(recipe, Role(role, role), SimpleNamespace(classes=list(classes)), 0, "")
    return build_model(meta)
