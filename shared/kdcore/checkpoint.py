"""Safe checkpoints: written atomically, read without unpickling arbitrary objects.

Training checkpoints (model, optimizer, scheduler, SWA, RNG states, epoch) are ``torch.save`` files read with
``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers; a file carrying code is
refused, not executed. Final weights are written as safetensors with a JSON sidecar.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .atomic import atomic_open, atomic_torch_save, atomic_write_json
from .errors import CheckpointError

__all__ = ["read_meta", "save_checkpoint", "load_checkpoint", "save_weights", "load_weights", "check_meta", "check_bound_meta",
           "BOUND_KEYS"]


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    atomic_torch_save(state, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a training checkpoint or plain state dict; never runs code stored in the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        return load_weights(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: the file holds pickled Python objects beyond tensors and plain "
            f"containers (it could run code); only kdvision checkpoints and plain state dicts are accepted "
            f"({str(exc).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    return state


def save_weights(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Final model weights as safetensors plus ``<path>.json`` metadata (architecture, fold, role, ...)."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    bound = {k: meta[k] for k in BOUND_KEYS if k in meta}
    with atomic_open(path, "wb") as f:
        f.write(_safetensors_bytes(tensors, {"kdvision": json.dumps(bound, sort_keys=True)}))
    atomic_write_json(path.with_suffix(".json"), meta)


# What the weights mean: kept inside the safetensors header too, so an edited model.json cannot relabel them.
BOUND_KEYS = ("arch", "num_outputs", "in_chans", "classes", "task", "n_points", "scheme")


def check_bound_meta(path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Refuse a ``model.json`` whose class order, architecture or output count differ from what the weights
    were saved with (weights written before this record existed are not checked)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = (f.metadata() or {}).get("kdvision")
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a valid safetensors file: {exc}") from None
    if not header:
        return
    bound = json.loads(header)
    wrong = [f"{k}: {meta.get(k)!r} in model.json, {v!r} in the weights" for k, v in bound.items()
             if meta.get(k) != v]
    if wrong:
        raise CheckpointError(f"{Path(path).with_suffix('.json')}: does not describe {Path(path).name} ("
                              + "; ".join(wrong) + "); model.json was edited: restore it")


def _safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    # Tied weights would share storage; safetensors refuses shared tensors, so store copies.
    seen: dict[int, str] = {}
    unique = {}
    for key, tensor in tensors.items():
        ptr = tensor.untyped_storage().data_ptr() if tensor.numel() else -1
        unique[key] = tensor.clone() if ptr in seen and ptr != -1 else tensor
        seen[ptr] = key
    return save(unique, metadata=metadata)


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a valid safetensors file: {exc}") from None


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    meta_path = Path(path).with_suffix(".json")
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path}: metadata of {Path(path).name} not found") from None
    except ValueError as exc:
        raise CheckpointError(f"{meta_path}: invalid JSON: {exc}") from None


def check_meta(path: str | os.PathLike, meta: dict[str, Any], expected: dict[str, Any]) -> None:
    """Refuse a checkpoint trained for another fold, split or architecture."""
    wrong = [f"{k}={meta.get(k)!r} (expected {v!r})" for k, v in expected.items() if meta.get(k) != v]
    if wrong:
        raise CheckpointError(f"{path}: belongs to another model or fold: " + ", ".join(wrong))
