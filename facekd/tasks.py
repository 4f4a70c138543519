"""How a landmark regressor is trained and scored by the kdcore engine: L2, or the KD-Loss from two teachers."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from kdcore.engine import move_to_device
from kdcore.feature_term import FeatureTerm
from kdcore.teacher import FrozenTeacher
from kdcore.teacher_cache import CachedTeacher

from .kd_loss import LandmarkKDLoss, L2LandmarkLoss
from .metrics import nme

__all__ = ["LandmarkTask", "predict_landmarks"]


@torch.no_grad()
def predict_landmarks(model: nn.Module, loader: DataLoader, device: torch.device,
                      amp_dtype: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Normalised crop predictions (N, 2K), targets (N, 2K), image->crop matrices (N, 2, 3) and indices (N,)."""
    model.eval()
    preds, targets, matrices, indices = [], [], [], []
    for batch in loader:
        images = move_to_device(batch["image"], device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            preds.append(model(images).float().cpu().numpy())
        targets.append(batch["target"].numpy())
        matrices.append(batch["matrix"].numpy())
        indices.append(batch["index"].numpy())
    return (np.concatenate(preds).astype(np.float64), np.concatenate(targets).astype(np.float64),
            np.concatenate(matrices), np.concatenate(indices))


class LandmarkTask:
    """Loss and inner validation (NME against the loader's targets) of one landmark model.

    Args:
        val_loader: the fold's inner-validation subjects (never its test subjects).
        teachers: ``{"tough": ..., "tolerant": ...}`` for the student; None for teachers and the baseline.
        kd_loss: the student's KD-Loss (used with ``teachers``).
        feature_term: FitNets hints added to the KD-Loss (:class:`kdcore.feature_term.FeatureTerm`), on the
            student's ``taps`` and the tough teacher's features; its projector is the engine's ``auxiliary``.
    """

    def __init__(self, val_loader: DataLoader, device: torch.device, teachers: dict[str, FrozenTeacher | CachedTeacher] | None = None,
                 kd_loss: LandmarkKDLoss | None = None, feature_term: FeatureTerm | None = None, taps: Any = None):
        self.val_loader, self.device, self.teachers = val_loader, device, teachers
        self.kd_loss, self.l2 = kd_loss, L2LandmarkLoss()
        self.feature_term, self.taps = feature_term, taps
        self.auxiliary = feature_term if feature_term is not None and feature_term.has_parameters else None

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pred = model(batch["image"]).float()
        if self.teachers is None:
            return self.l2(pred, batch["target"]), {}
        # Cached teachers find the outputs of the batch's views by their keys; live ones compute them.
        inputs = batch if isinstance(self.teachers["tough"], CachedTeacher) else batch["image"]
        tough = self.teachers["tough"](inputs)
        tolerant = self.teachers["tolerant"](inputs)
        parts = self.kd_loss.components(pred, tough, tolerant, batch["target"])
        # Detached tensors, read by the engine once per epoch (a float() here would wait for the GPU every step).
        logs = {"kd_main": parts.main.detach(), "kd_tough": parts.tough.detach(),
                "kd_tolerant": parts.tolerant.detach()}
        if self.feature_term is None:
            return parts.total, logs
        hint = self.feature_term(*self.feature_term.features(self.taps, self.teachers["tough"]))
        logs["hint"] = hint.detach()
        return parts.total + hint, logs

    def validate(self, model: nn.Module) -> dict[str, float]:
        pred, target, _, _ = predict_landmarks(model, self.val_loader, self.device)
        n_points = pred.shape[1] // 2
        errors = nme(pred.reshape(-1, n_points, 2), target.reshape(-1, n_points, 2))
        return {"nme": float(np.mean(errors)), "loss": float(np.mean((pred - target) ** 2))}

    def inputs(self, batch: dict) -> torch.Tensor:
        return batch["image"]
