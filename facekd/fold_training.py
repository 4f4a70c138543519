"""Training one landmark model of one fold: Tough (ground truth), Tolerant (ASM-softened), student (KD-Loss
from both, online), baseline (L2 only). Every model of the fold uses the fold's subjects from one manifest."""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch

from kdcore.device import autocast_dtype, resolve_device
from kdcore.engine import Trainer
from kdcore.experiment import eval_loader, sampler_seed, train_loader
from kdcore.logs import TensorBoardLogger
from kdcore.models import create_model
from kdcore.runner import FoldContext, FoldOutput
from kdcore.seeding import derive_seed
from kdcore.teacher import FrozenTeacher
from kdcore.teacher_cache import cached_teacher

from .augment import build_train_augment
from .config import FaceRecipe, ModelConfig
from .data_prep import subset_tags
from .dataset import FaceCropDataset
from .formats import FaceRecord
from .kd_loss import LandmarkKDLoss
from .preprocess import FACE_MEAN, FACE_STD, to_image_points
from .schemes import get_scheme
from .soft_targets import soften_records
from .tasks import LandmarkTask, predict_landmarks

__all__ = ["train_role", "model_meta", "build_regressor", "ROLES"]
Role = Literal["tough", "tolerant", "student", "baseline"]
ROLES: tuple[Role, ...] = ("tough", "tolerant", "student", "baseline")


def role_config(recipe: FaceRecipe, role: Role) -> ModelConfig:
    return {"tough": recipe.tough, "tolerant": recipe.tolerant}.get(role, recipe.student)


def model_meta(recipe: FaceRecipe, role: Role, n_points: int, fold: int, manifest_sha: str) -> dict:
    scheme = get_scheme(n_points)
    return {"arch": role_config(recipe, role).model, "role": role, "fold": fold, "manifest": manifest_sha,
            "task": "landmarks", "num_outputs": 2 * n_points, "in_chans": 3, "n_points": n_points,
            "scheme": scheme.name, "recipe": recipe.name,
            "input": {"size": recipe.data.image_size, "channels": 3, "mean": list(FACE_MEAN), "std": list(FACE_STD),
                      "crop_margin": recipe.data.crop_margin, "colour": "rgb",
                      "output": "x0, y0, x1, y1, ... in crop coordinates divided by the input size"}}


def build_regressor(meta: dict, pretrained: bool = False, weights: str | None = None,
                    drop_path: float | None = None, dropout: float | None = None) -> torch.nn.Module:
    return create_model(meta["arch"], num_outputs=meta["num_outputs"], pretrained=pretrained, weights=weights,
                        drop_path_rate=drop_path, in_chans=meta["in_chans"], drop_rate=dropout)


def _augment(recipe: FaceRecipe, cfg: ModelConfig, n_points: int):
    a = cfg.augment
    return build_train_augment(recipe.data.image_size, get_scheme(n_points), flip_p=a.flip, rotate=a.rotate,
                               scale=tuple(a.scale), translate=a.translate, affine_p=1.0 if (a.rotate or a.translate
                               or tuple(a.scale) != (1.0, 1.0)) else 0.0, colour_p=a.colour, blur_p=a.blur,
                               occlusion_p=a.occlusion)


def _teacher(recipe: FaceRecipe, role: Role, ctx: FoldContext, n_points: int, amp_dtype, device) -> FrozenTeacher:
    meta = model_meta(recipe, role, n_points, ctx.fold, ctx.manifest.sha)
    expected = {k: meta[k] for k in ("arch", "role", "fold", "manifest", "num_outputs", "in_chans")}
    return FrozenTeacher.from_weights(ctx.dependencies[role] / "model.safetensors", build_regressor, expected,
                                      amp_dtype=amp_dtype, device=device, channels_last=recipe.runtime.channels_last)


def _cached_teachers(recipe: FaceRecipe, ctx: FoldContext, teachers: dict, loader, device: torch.device):
    """Both teachers' outputs from the fold's cache (built on first use), and the loader that matches it."""
    student, data = recipe.student, recipe.data
    identity = {"manifest": ctx.manifest.sha, "fold": ctx.fold, "augment": student.augment.model_dump(mode="json"),
                "image_size": data.image_size, "crop_margin": data.crop_margin, "mean": list(FACE_MEAN),
                "std": list(FACE_STD), "sampler_seed": loader.sampler.seed, "batch_size": loader.batch_size}
    cached, loader, cache = cached_teacher(
        student.teacher_cache, ctx.model_dir.parent, loader, teachers,
        weights={name: ctx.dependencies[name] / "model.safetensors" for name in teachers}, identity=identity,
        epochs=student.train.epochs, pool_views=student.teacher_cache_views, dtype=student.teacher_cache_dtype,
        device=device, channels_last=recipe.runtime.channels_last)
    ctx.run.log_event({"model": "student", "fold": ctx.fold, "split": "teacher_cache", "mode": student.teacher_cache,
                       "build_seconds": cache.build_seconds, "lossless": cache.meta["lossless"],
                       "path": str(cache.path.relative_to(ctx.run.path))})
    return cached, loader


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


def split_records(records: Sequence[FaceRecord], ctx: FoldContext) -> dict[str, list[FaceRecord]]:
    parts = {}
    for part in ("train", "val", "test"):
        subjects = set(getattr(ctx.split, part))
        parts[part] = [r for r in records if r.subject in subjects]
    return parts


def train_role(role: Role, recipe: FaceRecipe, records: Sequence[FaceRecord], ctx: FoldContext) -> FoldOutput:
    cfg = role_config(recipe, role)
    runtime, data = recipe.runtime, recipe.data
    device = resolve_device(runtime.device)
    amp_dtype = autocast_dtype(device, cfg.train.amp, runtime.amp_dtype)
    n_points = records[0].n_points
    parts = split_records(records, ctx)
    size, margin = data.image_size, data.crop_margin

    train_targets = val_targets = None
    info: dict = {}
    if role == "tolerant":
        asm, (train_targets, val_targets) = soften_records(parts["train"], [parts["val"]], recipe.asm, size, margin)
        info["asm_components"] = int(asm.n_components_)
    train_set = FaceCropDataset(parts["train"], size, margin, train_targets, _augment(recipe, cfg, n_points))
    val_set = FaceCropDataset(parts["val"], size, margin, val_targets)
    test_set = FaceCropDataset(parts[ctx.evaluate], size, margin)
    loader = train_loader(train_set, cfg.train.batch_size, device, runtime.workers,
                          seed=sampler_seed(recipe.seed, role, ctx.fold), key=f"{role}.train.batch_size")
    val_loader = eval_loader(val_set, cfg.train.batch_size * 2, device, runtime.workers)
    test_loader = eval_loader(test_set, cfg.train.batch_size * 2, device, runtime.workers)

    meta = model_meta(recipe, role, n_points, ctx.fold, ctx.manifest.sha)
    torch.manual_seed(derive_seed(recipe.seed, role, ctx.fold, "init"))
    model = build_regressor(meta, cfg.pretrained, cfg.weights, cfg.drop_path, cfg.dropout)
    if cfg.mean_shape_init:
        init_head_to_mean_shape(model, train_set.mean_target())
    teachers = kd_loss = None
    if role == "student":
        teachers = {name: _teacher(recipe, name, ctx, n_points, amp_dtype, device) for name in ("tough", "tolerant")}
        kd_loss = LandmarkKDLoss(**recipe.student.kd.model_dump())
        if recipe.student.teacher_cache != "off":
            teachers, loader = _cached_teachers(recipe, ctx, teachers, loader, device)
    task = LandmarkTask(val_loader, device, teachers, kd_loss)
    tensorboard = TensorBoardLogger(ctx.run.path / "tensorboard") if runtime.tensorboard else None
    trainer = Trainer(model, cfg.train, task, monitor="nme", mode="min", device=device, amp_dtype=amp_dtype,
                      seed=recipe.seed, name=role, fold=ctx.fold, output_dir=ctx.model_dir, meta=meta, run=ctx.run,
                      tensorboard=tensorboard, channels_last=runtime.channels_last,
                      compile_model=runtime.compile, sync_batchnorm=runtime.sync_batchnorm,
                      on_epoch=ctx.on_epoch)
    result = trainer.fit(loader, resume=ctx.resume)
    if tensorboard is not None:
        tensorboard.close()

    pred, _, matrices, indices = predict_landmarks(result.model, test_loader, device, amp_dtype)
    rows = []
    for output, matrix, position in zip(pred, matrices, indices):
        record = test_set.records[position]
        points = to_image_points(output, matrix, size)
        width, height = record_size(record)
        row = {"id": record.record_id, "subject": record.subject, "fold": ctx.fold, "subset": subset_tags(record),
               "width": width, "height": height}
        row.update({f"{axis}{i}": float(points[i, j]) for i in range(n_points) for j, axis in enumerate("xy")})
        row.update({f"g{axis}{i}": float(record.landmarks[i, j]) for i in range(n_points) for j, axis in enumerate("xy")})
        rows.append(row)
    columns = ["id", "subject", "fold", "subset", "width", "height"]
    columns += [f"{axis}{i}" for i in range(n_points) for axis in "xy"]
    columns += [f"g{axis}{i}" for i in range(n_points) for axis in "xy"]
    trainer.discard_checkpoint()
    info.update({"kept": result.kept, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                 "stopped_early": result.stopped_early, "notes": result.notes,
                 "faces": {k: len(v) for k, v in parts.items()}})
    return FoldOutput(rows, columns, info)


def record_size(record: FaceRecord) -> tuple[int, int]:
    from .formats import load_face_image

    image = load_face_image(record)
    return int(image.shape[1]), int(image.shape[0])
