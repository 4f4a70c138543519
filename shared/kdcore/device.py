"""Device selection and the mixed-precision choices that go with it (device is always a parameter)."""

from __future__ import annotations

import torch

from .errors import ConfigError

__all__ = ["resolve_device", "autocast_dtype", "loader_options"]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; an unavailable explicit device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"runtime.device: unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device: {name!r} requested but CUDA is not available on this machine")
    return device


def autocast_dtype(device: torch.device, enabled: bool, preferred: str = "bfloat16") -> torch.dtype | None:
    """The autocast dtype to train with on ``device``, or None for full precision.

    CPUs autocast to bfloat16 only; CUDA uses bfloat16 where the GPU supports it, else float16
    (which then needs a GradScaler).
    """
    if not enabled:
        return None
    if device.type == "cpu":
        return torch.bfloat16
    if device.type == "cuda":
        if preferred == "bfloat16" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16
    if device.type == "mps":
        return torch.float16
    return None


def loader_options(device: torch.device, workers: int) -> dict:
    """DataLoader options for ``device``: pinned memory only feeds GPUs; persistent workers avoid re-forking."""
    options: dict = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        options["persistent_workers"] = True
        options["prefetch_factor"] = 4
    return options
