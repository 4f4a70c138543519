"""Input checks shared by every loss: shapes, dtypes and label range, with the shapes in the message."""

from __future__ import annotations

import math
from typing import Literal

import torch

__all__ = ["check_logits", "check_target", "check_distill_inputs", "compute_dtype", "check_positive", "check_fraction",
           "check_non_negative", "non_target_logits", "check_reduction", "Reduction"]

_HALF = (torch.float16, torch.bfloat16)
Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")


def compute_dtype(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are upcast to float32: softmax sums and logs in bf16 lose too many digits."""
    return logits.float() if logits.dtype in _HALF else logits


def check_logits(logits: torch.Tensor, name: str = "logits") -> None:
    """Logits must be a non-empty floating (B, C) tensor."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim != 2:
        raise ValueError(f"{name} must have shape (B, C), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {logits.dtype}")
    if logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"{name} must have a non-empty batch and at least one class, got {tuple(logits.shape)}")


def check_target(target: torch.Tensor, logits: torch.Tensor, name: str = "logits") -> None:
    """Target must be a long (B,) tensor of class indices in [0, C) for (B, C) logits."""
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    batch, n_classes = logits.shape
    if target.shape != (batch,):
        raise ValueError(f"target must have shape (B,) = ({batch},) to match {name} {tuple(logits.shape)}, "
                         f"got {tuple(target.shape)}")
    if target.dtype != torch.long:
        raise ValueError(f"target must hold class indices of dtype torch.long, got {target.dtype}")
    # No host read of the values on the hot path: a device-side assert (synchronous on the CPU, where it raises
    # at once; asynchronous on GPUs, where reading min/max would stall every step). Datasets map class names to
    # indices once when they are built, so a bad value here is a programming error, not a data error.
    message = f"target values must be in [0, {n_classes}) for {name} {tuple(logits.shape)}"
    try:
        torch._assert_async(((target >= 0) & (target < n_classes)).all(), message)
    except RuntimeError:
        low, high = int(target.min()), int(target.max())
        raise ValueError(f"{message}, got values in [{low}, {high}]") from None


def check_distill_inputs(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor | None,
                         min_classes: int = 1) -> None:
    """Student and teacher logits of the same (B, C) shape, and (when given) a matching (B,) target."""
    check_logits(student_logits, "student_logits")
    check_logits(teacher_logits, "teacher_logits")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError("student_logits and teacher_logits must have the same shape (B, C), got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    if student_logits.shape[1] < min_classes:
        raise ValueError(f"this loss needs at least {min_classes} classes, got logits of shape "
                         f"{tuple(student_logits.shape)}")
    if target is not None:
        check_target(target, student_logits, "student_logits")


def non_target_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The (B, C-1) logits left after removing each row's target column (order of the others kept).

    Selecting the columns avoids both ``log(0)`` and the large-negative sentinel of the official DKD code.
    """
    batch, n_classes = logits.shape
    # gather with computed column indices, not a boolean mask: a mask's output size is data-dependent, so
    # indexing with it waits for the device (a host sync per call).
    columns = torch.arange(n_classes - 1, device=logits.device).expand(batch, n_classes - 1)
    columns = columns + (columns >= target.unsqueeze(1)).long()
    return logits.gather(1, columns)


def check_positive(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_non_negative(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def check_fraction(value: float, name: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, _REDUCTIONS))}, got {reduction!r}")
    return reduction
