"""Models from timm: creation by name (pretrained hub weights or a local file), head/backbone split, size.

Example:
    >>> model = create_model("test_efficientnet", num_outputs=3)
    >>> head, backbone = split_head_backbone(model)
    >>> len(head) > 0 and len(backbone) > 0
    True
"""

from __future__ import annotations

import difflib
import os
import statistics
import time
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from .errors import ConfigError

__all__ = ["create_model", "check_model_choice", "split_head_backbone", "count_parameters", "count_flops",
           "measure_latency", "model_input_config"]


def create_model(
    name: str,
    num_outputs: int,
    pretrained: bool = False,
    weights: str | os.PathLike | None = None,
    drop_path_rate: float | None = None,
    in_chans: int = 3,
    drop_rate: float | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A timm model with a fresh ``num_outputs`` head.

    Args:
        name: timm model name, optionally with a pretrained tag (``convnextv2_large.fcmae_ft_in22k_in1k``).
        num_outputs: classes for classification, 2*K coordinates for K landmarks.
        pretrained: load timm's pretrained weights (from the Hugging Face hub cache, or ``weights``).
        weights: a local weights file (.safetensors, .pth, .bin) for machines without hub access; the
            classifier is re-initialised when its shape differs, exactly as timm does for hub weights.
        drop_path_rate: stochastic depth, for the models that have it.
        drop_rate: dropout before the classifier (timm's ``drop_rate``); None keeps the model's default.
    """
    check_model_choice(name, weights)
    options: dict[str, Any] = dict(num_classes=num_outputs, in_chans=in_chans, **kwargs)
    if drop_path_rate is not None:
        options["drop_path_rate"] = drop_path_rate
    if drop_rate is not None:
        options["drop_rate"] = drop_rate
    if weights is not None:
        path = Path(weights)
        options["pretrained_cfg_overlay"] = dict(file=str(path))
        pretrained = True
    try:
        return timm.create_model(name, pretrained=pretrained, **options)
    except (RuntimeError, OSError) as exc:
        if pretrained:
            where = f"file {weights}" if weights else "the Hugging Face hub (offline machines: set a local 'weights' file)"
            raise ConfigError(f"model {name!r}: cannot load pretrained weights from {where}: {exc}") from None
        raise


def check_model_choice(name: str, weights: str | os.PathLike | None = None, key: str = "model",
                       pretrained: bool = False) -> None:
    """Refuse an unknown timm name or pretrained tag, a missing weights file, or hub weights that cannot be
    fetched, before anything is trained (so a run cannot fail on its first model after preparing its data).

    Args:
        name: timm model name, optionally ``name.tag``.
        weights: local weights file, if any.
        key: the recipe section the choice comes from (``teacher``), named in the error.
        pretrained: with no ``weights``, fetch timm's pretrained weights into the hub cache now.

    Example:
        >>> check_model_choice("resnet18.a1_in1k")
        >>> check_model_choice("resnet181", key="student")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        kdcore.errors.ConfigError: student.model: 'resnet181' is not a timm model (did you mean resnet18, ...?)
    """
    prefix = f"{key}." if key != "model" else ""
    base, _, tag = name.partition(".")
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=3)
        raise ConfigError(f"{prefix}model: {name!r} is not a timm model"
                          + (f" (did you mean {', '.join(close)}?)" if close else ""))
    if tag and name not in timm.list_pretrained(f"{base}.*"):
        known = [t.partition(".")[2] for t in timm.list_pretrained(f"{base}.*")]
        raise ConfigError(f"{prefix}model: {name!r}: timm has no pretrained tag {tag!r} for {base}"
                          + (f" (known: {', '.join(known[:6])})" if known else ""))
    if weights is not None and not Path(weights).is_file():
        raise ConfigError(f"{prefix}weights: {weights} does not exist or is not a file")
    if pretrained and weights is None:
        _fetch_pretrained(name, prefix)


def _fetch_pretrained(name: str, prefix: str) -> None:
    """Download (or find in the local cache) the hub file timm will load, as timm itself resolves it."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise ConfigError(f"{prefix}pretrained: timm has no pretrained weights for {name!r}; "
                          f"set {prefix}pretrained: false or a local {prefix}weights file")
    if not cfg.hf_hub_id:
        return  # URL-only weights: timm's own download reports its errors
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo = cfg.hf_hub_id.split("@")[0]
    try:
        try:
            hf_hub_download(repo, cfg.hf_hub_filename or "model.safetensors")
        except EntryNotFoundError as exc:
            if isinstance(exc, LocalEntryNotFoundError):  # offline and not cached: the .bin will not be either
                raise
            hf_hub_download(repo, "pytorch_model.bin")  # older repos hold only a .bin
    except Exception as exc:  # offline, proxy, missing repo: all end the same way for the user
        raise ConfigError(f"{prefix}pretrained: cannot fetch timm's pretrained weights for {name!r} from the "
                          f"Hugging Face hub ({repo}): {type(exc).__name__}; on an offline machine set "
                          f"{prefix}weights to a local file, or {prefix}pretrained: false") from None


def model_input_config(model: nn.Module) -> dict[str, Any]:
    """timm's preprocessing contract: input size, mean, std, interpolation."""
    cfg = timm.data.resolve_data_config({}, model=model)
    return {"input_size": list(cfg["input_size"]), "mean": list(cfg["mean"]), "std": list(cfg["std"]),
            "interpolation": cfg["interpolation"]}


def split_head_backbone(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Parameters of the classifier (timm's ``get_classifier``) and of everything else."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(classifier, nn.Module):
        raise ValueError(f"{type(model).__name__}: no classifier found to split head from backbone")
    head_ids = {id(p) for p in classifier.parameters()}
    head = [p for p in model.parameters() if id(p) in head_ids]
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    return head, backbone


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs for one input of ``input_shape`` (C, H, W), via torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros((1, *input_shape), device=device))
    model.train(was_training)
    return int(counter.get_total_flops())


def measure_latency(fn: Any, example: Any, warmup: int = 3, runs: int = 10) -> dict[str, float]:
    """Median and quartiles of the wall time (ms) of ``fn(example)`` after warm-up."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn(example)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn(example)
            times.append((time.perf_counter() - start) * 1000.0)
    quartiles = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_ms": statistics.median(times), "p25_ms": quartiles[0], "p75_ms": quartiles[2], "runs": runs}
