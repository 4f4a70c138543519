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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import timm
import torch
from torch import nn

from .errors import ConfigError

__all__ = ["ModelMeta", "build_model", "create_model", "check_model_choice", "split_head_backbone",
           "count_parameters", "count_flops", "measure_latency"]


@dataclass(frozen=True)
class ModelMeta:
    """What rebuilds a trained model: written as its ``model.json`` and read back by teachers, exports and
    predictors. ``extra`` holds what a vertical adds (class names, landmark scheme) and stays in the file.

    Example:
        >>> meta = ModelMeta("test_efficientnet", num_outputs=3, in_chans=1, task="classification", role="student",
        ...                  extra={"classes": ["a", "b", "c"]})
        >>> ModelMeta.from_dict(meta.to_dict()) == meta
        True
        >>> build_model(meta).get_classifier().out_features
        3
    """

    arch: str
    num_outputs: int
    in_chans: int = 3
    task: str = ""
    role: str = ""
    fold: int = -1
    manifest: str = ""
    recipe: str = ""
    input: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    IDENTITY = ("arch", "role", "fold", "manifest", "num_outputs", "in_chans")
    _FIELDS = ("arch", "role", "fold", "manifest", "task", "num_outputs", "in_chans", "recipe", "input")

    def to_dict(self) -> dict[str, Any]:
        """The ``model.json`` layout: the fields, the vertical's extras, then recipe and input."""
        head = {"arch": self.arch, "role": self.role, "fold": self.fold, "manifest": self.manifest,
                "task": self.task, "num_outputs": self.num_outputs, "in_chans": self.in_chans}
        return {**head, **dict(self.extra), "recipe": self.recipe, "input": dict(self.input)}

    def identity(self) -> dict[str, Any]:
        """The keys a loaded teacher must match (another fold, split or architecture is refused)."""
        return {k: self.to_dict()[k] for k in self.IDENTITY}

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any]) -> "ModelMeta":
        """From a ``model.json`` mapping; keys beyond the fields (training results, extras) go to ``extra``."""
        missing = [k for k in ("arch", "num_outputs") if k not in meta]
        if missing:
            raise ConfigError(f"model metadata lacks {missing}")
        known = {k: meta[k] for k in cls._FIELDS if k in meta}
        known["num_outputs"], known["in_chans"] = int(meta["num_outputs"]), int(meta.get("in_chans", 3))
        return cls(**known, extra={k: v for k, v in meta.items() if k not in cls._FIELDS})


def build_model(meta: ModelMeta | Mapping[str, Any], pretrained: bool = False, weights: str | os.PathLike | None = None,
                drop_path: float | None = None, dropout: float | None = None) -> nn.Module:
    """The untrained network ``meta`` describes (the one function that turns a model's metadata into a model)."""
    if not isinstance(meta, ModelMeta):
        meta = ModelMeta.from_dict(meta)
    return create_model(meta.arch, num_outputs=meta.num_outputs, pretrained=pretrained, weights=weights,
                        drop_path_rate=drop_path, in_chans=meta.in_chans, drop_rate=dropout)


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
