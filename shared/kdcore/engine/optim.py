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

    Biases and normalisation weights (1-D parameters) get no weight decay, as in timm, unless
    ``config.filter_bias_and_bn`` is false (every parameter decays, as KD-OCT's code).
    """
    head, backbone = split_head_backbone(model)
    backbone_lr = config.backbone_lr if config.backbone_lr is not None else config.lr
    groups = []
    for name, params, lr in (("head", head, config.lr), ("backbone", backbone, backbone_lr)):
        decay = [p for p in params if p.ndim > 1 or not config.filter_bias_and_bn]
        no_decay = [p for p in params if p.ndim <= 1 and config.filter_bias_and_bn]
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
    """Linear warmup, then cosine to ``min_lr`` over ``schedule_epochs``, constant, or inverse-time decay.

    Stepped once per optimizer step, or once per epoch with ``config.schedule_per == "epoch"`` (the caller
    steps it). ``config.schedule_epochs``, when set, replaces ``schedule_epochs`` (by default the SWA start, so
    the cosine ends where SWALR takes over). Warm-up runs from ``warmup_start_factor`` to 1 over
    ``warmup_epochs``; with ``warmup_start_factor`` None unit ``u`` of it gets ``(u + 1) / warmup``.

    Example:
        >>> from kdcore.config import TrainConfig
        >>> sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> cfg = TrainConfig(epochs=10, warmup_epochs=2, warmup_start_factor=None, schedule_per="epoch",
        ...                   min_lr=0.0)
        >>> sched = build_scheduler(sgd, cfg, steps_per_epoch=5, schedule_epochs=10)
        >>> [round(sched.lr_lambdas[0](e), 3) for e in range(4)]  # KD-OCT: (e + 1) / 2, then cosine
        [0.5, 1.0, 1.0, 0.962]
    """
    per_epoch = config.schedule_per == "epoch"
    units_per_epoch = 1 if per_epoch else steps_per_epoch
    epochs = config.schedule_epochs if config.schedule_epochs is not None else schedule_epochs
    total = max(1, epochs * units_per_epoch)
    warmup = min(int(round(config.warmup_epochs * units_per_epoch)), total - 1)
    start = config.warmup_start_factor

    def factor_for(base_lr: float):
        floor = min(1.0, config.min_lr / base_lr) if base_lr > 0 else 0.0

        def factor(step: int) -> float:
            if step < warmup:
                if start is None:
                    return (step + 1) / warmup
                return start + (1 - start) * step / max(1, warmup)
            if config.schedule == "constant":
                return 1.0
            if config.schedule == "inverse_time":
                return 1.0 / (1.0 + config.lr_decay * (step - warmup))
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
