"""How a classifier is trained and scored by the kdcore engine: plain, or distilled from a frozen teacher."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from kdcore.engine import move_to_device
from kdcore.teacher import FrozenTeacher
from kdcore.teacher_cache import CachedTeacher

from .metrics import classification_metrics

__all__ = ["ClassificationTask", "predict_probabilities"]


@torch.no_grad()
def predict_probabilities(model: nn.Module, loader: DataLoader, device: torch.device, tta: bool = False,
                          amp_dtype: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (N, C) and dataset indices (N,); with ``tta`` the mean over the image and its
    horizontal mirror (deterministic test-time augmentation)."""
    model.eval()
    probabilities, indices = [], []
    for batch in loader:
        images = move_to_device(batch["image"], device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            probs = F.softmax(model(images).float(), dim=1)
            if tta:
                probs = 0.5 * (probs + F.softmax(model(torch.flip(images, dims=[-1])).float(), dim=1))
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
    """

    def __init__(self, loss_fn: nn.Module, val_loader: DataLoader, classes: list[str], device: torch.device,
                 teacher: FrozenTeacher | CachedTeacher | None = None):
        self.loss_fn, self.val_loader, self.classes = loss_fn, val_loader, classes
        self.device, self.teacher = device, teacher

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["image"]).float()
        if self.teacher is None:
            return self.loss_fn(logits, batch["target"]), {}
        # A cached teacher finds the outputs of the batch's views by their keys; a live one computes them.
        teacher_logits = self.teacher(batch) if isinstance(self.teacher, CachedTeacher) else self.teacher(batch["image"])
        agreement = (teacher_logits.argmax(1) == logits.argmax(1)).float().mean()
        return self.loss_fn(logits, teacher_logits, batch["target"]), {"teacher_agreement": float(agreement)}

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
