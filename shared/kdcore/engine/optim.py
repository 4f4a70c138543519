"""Optimizer with separate head/backbone learning rates, and a warmup + cosine schedule per optimizer step."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import TrainConfig
from ..models import split_head_backbone

__all__ = ["build_optimizer", "build_scheduler", "set_backbone_trainable"]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (or Adam/SGD) with two parameter groups: ``head`` at ``lr``, ``backbone`` at ``backbone_lr``.

    Biases and normalisation weights (1-D parameters) get no weight decay, as in timm.
    """
    head, backbone = split_head_backbone(model)
    backbone_lr = config.backbone_lr if config.backbone_lr is not None else config.lr
    groups = []
    for name, params, lr in (("head", head, config.lr), ("backbone", backbone, backbone_lr)):
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        if decay:
            groups.append({"name": name, "params": decay, "lr": lr, "weight_decay": config.weight_decay})
        if no_decay:
            groups.append({"name": name, "params": no_decay, "lr": lr, "weight_decay": 0.0})
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups)
    if config.optimizer == "adam":
        # Adam's weight decay is L2 in the gradient; kept for papers that used it (e.g. Fard & Mahoor).
        return torch.optim.Adam(groups)
    # torch refuses Nesterov without momentum (momentum: 0 is a valid recipe value)
    return torch.optim.SGD(groups, momentum=config.momentum, nesterov=config.momentum > 0)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int,
                    schedule_epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from ``warmup_start_factor * lr`` then cosine to ``min_lr`` over ``schedule_epochs``.

    Stepped once per optimizer step. With SWA, ``schedule_epochs`` is the SWA start so the cosine ends where
    SWALR takes over.
    """
    total = max(1, schedule_epochs * steps_per_epoch)
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total - 1)

    def factor_for(base_lr: float):
        floor = min(1.0, config.min_lr / base_lr) if base_lr > 0 else 0.0

        def factor(step: int) -> float:
            if step < warmup:
                return config.warmup_start_factor + (1 - config.warmup_start_factor) * step / max(1, warmup)
            if config.schedule == "constant":
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        return factor

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor_for(g["lr"]) for g in optimizer.param_groups])


def set_backbone_trainable(optimizer: torch.optim.Optimizer, trainable: bool) -> None:
    """Freeze or unfreeze the backbone group's parameters (frozen-backbone warm epochs)."""
    for group in optimizer.param_groups:
        if group.get("name") == "backbone":
            for param in group["params"]:
                param.requires_grad_(trainable)
