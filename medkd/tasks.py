"""How a classifier is trained and scored by the kdcore engine: plain, or distilled from a frozen teacher."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from kdcore.engine import move_to_device
from kdcore.teacher import FrozenTeacher
from kdcore.teacher_cache import CachedTeacher

from .metrics import classification_metrics

__all__ = ["ClassificationTask", "predict_probabilities", "tta_view", "TTA_VIEWS"]

TTA_VIEWS = ("hflip", "vflip", "zoom", "rotate")


def _rotation_angles(indices: torch.Tensor) -> torch.Tensor:
    # KD-OCT's RandomRotation(5) view, made deterministic: a fixed angle in [-5, 5] per dataset index
    return torch.tensor([np.random.default_rng(int(i)).uniform(-5.0, 5.0) for i in indices], dtype=torch.float32)


def tta_view(images: torch.Tensor, view: str, indices: torch.Tensor | None = None) -> torch.Tensor:
    """One deterministic test-time view of an (N, C, H, W) batch: ``hflip``, ``vflip``, ``zoom`` (1.1x, centre
    crop, as KD-OCT's Resize(1.1 s) + CenterCrop(s)) or ``rotate`` (a fixed per-image angle in +-5 degrees)."""
    if view == "hflip":
        return torch.flip(images, dims=[-1])
    if view == "vflip":
        return torch.flip(images, dims=[-2])
    height, width = images.shape[-2:]
    if view == "zoom":
        big = F.interpolate(images, size=(int(height * 1.1), int(width * 1.1)), mode="bilinear", align_corners=False)
        top, left = (big.shape[-2] - height) // 2, (big.shape[-1] - width) // 2
        return big[..., top:top + height, left:left + width]
    if view == "rotate":
        if indices is None:
            raise ValueError("the rotate view needs the dataset indices of the batch")
        angles = torch.deg2rad(_rotation_angles(indices)).to(images.device)
        cos, sin = torch.cos(angles), torch.sin(angles)
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    raise ValueError(f"unknown test-time view {view!r} (known: {', '.join(TTA_VIEWS)})")


@torch.no_grad()
def predict_probabilities(model: nn.Module, loader: DataLoader, device: torch.device,
                          tta: bool | Sequence[str] = False,
                          amp_dtype: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (N, C) and dataset indices (N,); with ``tta`` the mean over the image and its
    views (``True``: the horizontal mirror; or a list of :data:`TTA_VIEWS`), all deterministic."""
    views = (["hflip"] if tta is True else list(tta)) if tta else []
    model.eval()
    probabilities, indices = [], []
    for batch in loader:
        images = move_to_device(batch["image"], device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            probs = F.softmax(model(images).float(), dim=1)
            for view in views:
                probs = probs + F.softmax(model(tta_view(images, view, batch["index"])).float(), dim=1)
            probs = probs / (1 + len(views))
        probabilities.append(probs.cpu().numpy())
        indices.append(batch["index"].numpy())
    return np.concatenate(probabilities).astype(np.float64), np.concatenate(indices)


class ClassificationTask:
    """Loss and inner validation of one classifier.

    Args:
        loss_fn: ``(logits, target)`` for teachers and baselines, ``(logits, teacher_logits, target)`` when
            ``teacher`` is given (online distillation: the teacher sees the very batch the student sees).
        val_loader: the fold's inner-validation patients (never its test patients).
        classes: class names in index order.
        device: where validation runs.
        taps: the student's feature taps of an objective with a feature term or self-distillation (USKD): the
            loss then gets ``**loss_fn.feature_kwargs(taps, teacher)``, and its learned parts (projector, weak
            classifier) are the engine's ``auxiliary``.
    """

    def __init__(self, loss_fn: nn.Module, val_loader: DataLoader, classes: list[str], device: torch.device,
                 teacher: FrozenTeacher | CachedTeacher | None = None, taps: Any = None):
        self.loss_fn, self.val_loader, self.classes = loss_fn, val_loader, classes
        self.device, self.teacher, self.taps = device, teacher, taps
        self.auxiliary = loss_fn if getattr(loss_fn, "has_parameters", False) else None

    def set_epoch(self, epoch: int) -> None:
        """Tell an epoch-dependent objective (kd_warmup_epochs) which epoch is starting."""
        if hasattr(self.loss_fn, "set_epoch"):
            self.loss_fn.set_epoch(epoch)

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        logits = model(batch["image"]).float()
        if self.teacher is None:
            if self.taps is not None:  # self-distillation (USKD): the student's own feature, no teacher
                return self.loss_fn(logits, None, batch["target"], **self.loss_fn.feature_kwargs(self.taps)), {}
            return self.loss_fn(logits, batch["target"]), {}
        # A cached teacher finds the outputs of the batch's views by their keys; a live one computes them.
        teacher_logits = self.teacher(batch) if isinstance(self.teacher, CachedTeacher) else self.teacher(batch["image"])
        # A detached tensor, read by the engine once per epoch (a float() here would wait for the GPU every step).
        agreement = (teacher_logits.argmax(1) == logits.detach().argmax(1)).float().mean()
        logs = {"teacher_agreement": agreement}
        if getattr(self.loss_fn, "kd_warmup_epochs", 0):  # show the distillation weight's ramp in log.jsonl
            logs["kd_factor"] = float(self.loss_fn.kd_factor)  # a Python number set per epoch: no device read
        features = self.loss_fn.feature_kwargs(self.taps, self.teacher) if self.taps is not None else {}
        return self.loss_fn(logits, teacher_logits, batch["target"], **features), logs

    def validate(self, model: nn.Module) -> dict[str, float]:
        probs, indices = predict_probabilities(model, self.val_loader, self.device)
        targets = np.asarray(self.val_loader.dataset.targets)[indices]
        nll = float(F.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-12)), torch.from_numpy(targets)))
        metrics = classification_metrics(targets, probs, self.classes)
        # Undefined metrics (a class absent from a small validation split) are NaN: never "best".
        defined = lambda value: float("nan") if value is None else float(value)  # noqa: E731
        return {"loss": nll, "auc": defined(metrics["auc"]), "balanced_accuracy": defined(metrics["sensitivity"]),
                "accuracy": defined(metrics["accuracy"])}

    def inputs(self, batch: dict) -> torch.Tensor:
        return batch["image"]
