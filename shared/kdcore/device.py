"""Device selection and the mixed-precision choices that go with it (device is always a parameter)."""

from __future__ import annotations

import os

import torch

from .errors import ConfigError
from .logs import get_logger

__all__ = ["resolve_device", "autocast_dtype", "loader_options"]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; an unavailable explicit device is an error.

    Under torchrun a CUDA device is the GPU of the process's ``LOCAL_RANK`` whatever index the recipe names.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return _per_rank(torch.device("cuda"))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"runtime.device: unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device: {name!r} requested but CUDA is not available on this machine")
    return _per_rank(device)


def _per_rank(device: torch.device) -> torch.device:
    """Under torchrun each process owns the GPU of its ``LOCAL_RANK``: ``cuda`` or ``cuda:N`` in a recipe would
    otherwise put every rank of the node on one GPU."""
    if device.type != "cuda" or int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "LOCAL_RANK" not in os.environ:
        return device
    local = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    if device.index is not None and device.index != local.index:
        get_logger(__name__).warning("runtime.device: %s ignored under torchrun; local rank %d uses %s "
                                     "(choose GPUs with CUDA_VISIBLE_DEVICES)", device, local.index, local)
    return local


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
        # Native bf16 only (Ampere and later): on V100/T4 torch emulates it, slower than fp32; fp16 is the fallback.
        if preferred == "bfloat16" and torch.cuda.is_bf16_supported(including_emulation=False):
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
