"""Training one model of one fold: teacher (focal loss), student (online KD from that fold's teacher), baseline."""

from __future__ import annotations

from typing import Literal

import torch

from kdcore.device import autocast_dtype, resolve_device
from kdcore.engine import Trainer
from kdcore.experiment import eval_loader, sampler_seed, train_loader
from kdcore.losses import CrossEntropyLoss, FocalLoss, balanced_class_weights
from kdcore.objective import build_student_objective
from kdcore.logs import TensorBoardLogger
from kdcore.models import create_model
from kdcore.runner import FoldContext, FoldOutput
from kdcore.seeding import derive_seed
from kdcore.teacher import FrozenTeacher
from kdcore.teacher_cache import cached_teacher

from .config import OCTRecipe, StudentConfig, TeacherConfig
from .data import OCTDataset
from .dataset import BScanDataset
from .official import select_records
from .preprocess import OCT_MEAN, OCT_STD
from .tasks import ClassificationTask, predict_probabilities
from .transforms import build_augment

__all__ = ["train_role", "model_meta", "build_classifier"]
Role = Literal["teacher", "student", "baseline"]
MONITOR_MODE = {"loss": "min", "auc": "max", "balanced_accuracy": "max", "accuracy": "max"}


def role_config(recipe: OCTRecipe, role: Role) -> TeacherConfig | StudentConfig:
    return recipe.teacher if role == "teacher" else recipe.student


def model_meta(recipe: OCTRecipe, role: Role, classes: list[str], fold: int, manifest_sha: str) -> dict:
    cfg = role_config(recipe, role)
    return {"arch": cfg.model, "role": role, "fold": fold, "manifest": manifest_sha, "task": "classification",
            "num_outputs": len(classes), "in_chans": 1, "classes": list(classes), "recipe": recipe.name,
            "input": {"size": recipe.data.image_size, "channels": 1, "mean": list(OCT_MEAN), "std": list(OCT_STD),
                      "resize": "letterbox", "pad_value": 0, "colour": "gray"}}


def build_classifier(meta: dict, pretrained: bool = False, weights: str | None = None,
                     drop_path: float | None = None, dropout: float | None = None) -> torch.nn.Module:
    return create_model(meta["arch"], num_outputs=meta["num_outputs"], pretrained=pretrained, weights=weights,
                        drop_path_rate=drop_path, in_chans=meta["in_chans"], drop_rate=dropout)


def _loss(recipe: OCTRecipe, role: Role, train_targets: list[int], n_classes: int) -> torch.nn.Module:
    if role == "teacher":
        cfg = recipe.teacher
        weights = balanced_class_weights(train_targets, n_classes).tolist() if cfg.class_weights == "balanced" else None
        if cfg.loss == "focal":
            return FocalLoss(gamma=cfg.focal_gamma, class_weights=weights, normalize=cfg.focal_normalize)
        return CrossEntropyLoss(class_weights=weights)
    if role == "baseline":
        return CrossEntropyLoss()
    return build_student_objective(recipe.student)


def _cached_teacher(recipe: OCTRecipe, ctx: FoldContext, teacher: FrozenTeacher, loader, device: torch.device):
    """The student's teacher outputs from the fold's cache (built on first use), and the loader that matches it."""
    student = recipe.student
    identity = {"manifest": ctx.manifest.sha, "fold": ctx.fold, "augment": student.augment.model_dump(mode="json"),
                "image_size": recipe.data.image_size, "mean": list(OCT_MEAN), "std": list(OCT_STD),
                "sampler_seed": loader.sampler.seed, "batch_size": loader.batch_size}
    cached, loader, cache = cached_teacher(
        student.teacher_cache, ctx.model_dir.parent, loader, teacher,
        weights=ctx.dependencies["teacher"] / "model.safetensors", identity=identity, epochs=student.train.epochs,
        pool_views=student.teacher_cache_views, dtype=student.teacher_cache_dtype, device=device,
        channels_last=recipe.runtime.channels_last)
    ctx.run.log_event({"model": "student", "fold": ctx.fold, "split": "teacher_cache", "mode": student.teacher_cache,
                       "build_seconds": cache.build_seconds, "lossless": cache.meta["lossless"],
                       "path": str(cache.path.relative_to(ctx.run.path))})
    return cached, loader


def train_role(role: Role, recipe: OCTRecipe, dataset: OCTDataset, ctx: FoldContext) -> FoldOutput:
    cfg = role_config(recipe, role)
    runtime = recipe.runtime
    device = resolve_device(runtime.device)
    amp_dtype = autocast_dtype(device, cfg.train.amp, runtime.amp_dtype)
    classes = dataset.classes
    official = recipe.data.evaluation == "official_test"
    parts = {part: select_records(dataset, set(getattr(ctx.split, part)), part, official)
             for part in ("train", "val", "test")}
    size = recipe.data.image_size
    cache = recipe.data.cache_decoded
    train_set = BScanDataset(parts["train"], classes, size, build_augment(cfg.augment), cache_decoded=cache)
    val_set = BScanDataset(parts["val"], classes, size, cache_decoded=cache)
    test_set = BScanDataset(parts[ctx.evaluate], classes, size, cache_decoded=cache)

    loader = train_loader(train_set, cfg.train.batch_size, device, runtime.workers,
                          seed=sampler_seed(recipe.seed, role, ctx.fold), key=f"{role}.train.batch_size")
    val_loader = eval_loader(val_set, cfg.train.batch_size * 2, device, runtime.workers)
    test_loader = eval_loader(test_set, cfg.train.batch_size * 2, device, runtime.workers)

    meta = model_meta(recipe, role, classes, ctx.fold, ctx.manifest.sha)
    torch.manual_seed(derive_seed(recipe.seed, role, ctx.fold, "init"))
    model = build_classifier(meta, cfg.pretrained, cfg.weights, cfg.drop_path, cfg.dropout)
    teacher = None
    if role == "student":
        teacher_meta = model_meta(recipe, "teacher", classes, ctx.fold, ctx.manifest.sha)
        teacher = FrozenTeacher.from_weights(
            ctx.dependencies["teacher"] / "model.safetensors", build_classifier,
            expected={k: teacher_meta[k] for k in ("arch", "role", "fold", "manifest", "num_outputs", "in_chans")},
            amp_dtype=amp_dtype, device=device, channels_last=runtime.channels_last)
        if recipe.student.teacher_cache != "off":
            teacher, loader = _cached_teacher(recipe, ctx, teacher, loader, device)
    task = ClassificationTask(_loss(recipe, role, train_set.targets, len(classes)).to(device), val_loader,
                              classes, device, teacher)
    tensorboard = TensorBoardLogger(ctx.run.path / "tensorboard") if runtime.tensorboard else None
    trainer = Trainer(model, cfg.train, task, monitor=cfg.monitor, mode=MONITOR_MODE[cfg.monitor], device=device,
                      amp_dtype=amp_dtype, seed=recipe.seed, name=role, fold=ctx.fold, output_dir=ctx.model_dir,
                      meta=meta, run=ctx.run, tensorboard=tensorboard, channels_last=runtime.channels_last,
                      compile_model=runtime.compile, sync_batchnorm=runtime.sync_batchnorm,
                      on_epoch=ctx.on_epoch)
    result = trainer.fit(loader, resume=ctx.resume)
    if tensorboard is not None:
        tensorboard.close()

    probs, indices = predict_probabilities(result.model, test_loader, device, tta=cfg.tta and cfg.tta_views,
                                           amp_dtype=amp_dtype)
    rows = []
    for position, p in zip(indices, probs):
        record = test_set.records[position]
        row = {"id": record.image_id, "patient": record.patient, "eye": record.eye or "", "fold": ctx.fold,
               "target": record.label, "pred": classes[int(p.argmax())]}
        row.update({f"prob_{name}": float(value) for name, value in zip(classes, p)})
        rows.append(row)
    columns = ["id", "patient", "eye", "fold", "target", "pred"] + [f"prob_{c}" for c in classes]
    trainer.discard_checkpoint()
    info = {"kept": result.kept, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early, "notes": result.notes,
            "images": {part: len(records) for part, records in parts.items()}}
    return FoldOutput(rows, columns, info)
