"""Named intermediate outputs by forward hooks (never by rewriting ``forward``), and the learned projector that
maps a student feature onto a teacher feature's shape.

``"pooled"`` is the pooled embedding a timm model feeds its classifier (the input of ``get_classifier()``);
``"stage:<i>"`` the output of stage ``i`` of timm's ``model.feature_info`` (``"stage:-2"``: the penultimate stage,
USKD's feature); any other name is a module path of ``model.named_modules()`` (e.g. ``"layer3"``, ``"blocks.5"``),
recorded as that module's output.

Example:
    >>> import torch, timm
    >>> model = timm.create_model("resnet10t", num_classes=3)
    >>> taps = FeatureTaps(model, ("pooled", "layer3"))
    >>> logits = model(torch.zeros(2, 3, 32, 32))
    >>> tuple(taps.features["pooled"].shape), tuple(taps.features["layer3"].shape)
    ((2, 512), (2, 256, 2, 2))
    >>> projector = Projector.for_shapes((2, 256, 2, 2), (2, 64, 4, 4))
    >>> tuple(projector(taps.features["layer3"]).shape)
    (2, 64, 4, 4)
    >>> taps.remove()
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

__all__ = ["FeatureTaps", "Projector", "POOLED", "PENULTIMATE_STAGE", "resolve_module", "pool_feature"]

POOLED = "pooled"
PENULTIMATE_STAGE = "stage:-2"


def resolve_module(model: nn.Module, path: str) -> nn.Module:
    """The sub-module of ``model`` at ``path`` (``"pooled"`` = its classifier, whose input is recorded;
    ``"stage:<i>"`` = the module of ``model.feature_info[i]``).

    Raises:
        ConfigError: unknown path, naming it and the closest module paths.
    """
    if path == POOLED:
        classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
        if not isinstance(classifier, nn.Module):
            raise ConfigError(f"feature 'pooled': {type(model).__name__} has no classifier (get_classifier()) whose "
                              "input is the pooled embedding; name a module path instead")
        return classifier
    if path.startswith("stage:"):
        info = getattr(model, "feature_info", None)
        try:
            path = info[int(path[len("stage:"):])]["module"]
        except (TypeError, ValueError, IndexError, KeyError):
            stages = len(info) if isinstance(info, (list, tuple)) else 0
            raise ConfigError(f"feature {path!r}: {type(model).__name__} has {stages} stages in feature_info "
                              "(timm models); use an index in range, 'pooled' or a module path") from None
    modules = dict(model.named_modules())
    module = modules.get(path) if path else None
    if module is None:
        close = difflib.get_close_matches(str(path), [name for name in modules if name], n=3, cutoff=0.5)
        hint = f" (closest: {', '.join(close)})" if close else ""
        raise ConfigError(f"feature {path!r}: no module at this path in {type(model).__name__}{hint}; "
                          f"use 'pooled' or a name of model.named_modules()")
    return module


def pool_feature(feature: torch.Tensor) -> torch.Tensor:
    """A (B, D) embedding from a (B, D) vector or a (B, C, H, W) map (global average pooling)."""
    if feature.ndim == 4:
        return feature.mean(dim=(2, 3))
    if feature.ndim == 2:
        return feature
    raise ValueError(f"feature must have shape (B, D) or (B, C, H, W), got {tuple(feature.shape)}")


class FeatureTaps:
    """Record named intermediate outputs of ``model`` on every forward pass, through forward hooks.

    Args:
        model: any ``nn.Module`` (timm models for ``"pooled"``).
        paths: ``"pooled"`` and/or module paths.

    ``features`` maps each path to the tensor of the LAST forward pass (kept in the autograd graph, so a loss on
    it trains the model); :meth:`remove` detaches the hooks. Under ``torch.inference_mode`` the tensors are
    inference tensors (see :class:`kdcore.teacher.FrozenTeacher`, which clones them).

    Note: ``"pooled"`` is what the classifier receives, so in training mode it is after the head's dropout
    (timm's ``drop_rate``); in eval mode it equals ``forward_head(pre_logits=True)``.
    """

    def __init__(self, model: nn.Module, paths: Sequence[str] = (POOLED,)):
        if isinstance(paths, str):
            paths = (paths,)
        if not paths:
            raise ConfigError("FeatureTaps needs at least one feature path")
        self.paths = tuple(dict.fromkeys(paths))
        self.features: dict[str, torch.Tensor] = {}
        self._handles = []
        for path in self.paths:
            module = resolve_module(model, path)  # all paths checked before any hook is registered
            self._handles.append((path, module))
        handles = []
        for path, module in self._handles:
            if path == POOLED:
                handles.append(module.register_forward_pre_hook(self._pre_hook(path)))
            else:
                handles.append(module.register_forward_hook(self._hook(path)))
        self._handles = handles

    def _pre_hook(self, path: str):
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            self.features[path] = args[0]
        return hook

    def _hook(self, path: str):
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            self.features[path] = output[0] if isinstance(output, (tuple, list)) else output
        return hook

    def clear(self) -> None:
        self.features = {}

    def remove(self) -> None:
        """Remove the hooks (the model runs as if never tapped)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.clear()

    def __getitem__(self, path: str) -> torch.Tensor:
        if path not in self.features:
            raise KeyError(f"feature {path!r} was not recorded (tapped: {', '.join(self.paths)}; "
                           "has the model run a forward pass?)")
        return self.features[path]

    def __enter__(self) -> "FeatureTaps":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


class Projector(nn.Module):
    """A learned map from a student feature's shape to a teacher feature's shape (FitNets' regressor).

    Linear for (B, D) embeddings, 1x1 convolution for (B, C, H, W) maps (a student map of another spatial size
    is first resized to the teacher's by adaptive average pooling). It belongs to the loss, never to the student:
    it trains with the student and is not part of the student's ``state_dict``, so export drops it.
    """

    def __init__(self, layer: nn.Module, out_size: tuple[int, int] | None = None):
        super().__init__()
        self.layer = layer
        self.out_size = out_size

    @classmethod
    def for_shapes(cls, student_shape: Iterable[int], teacher_shape: Iterable[int],
                   identity_if_equal: bool = False) -> "Projector":
        """Projector for features of these shapes (batch dimension included, its size ignored).

        ``identity_if_equal``: no parameters when the shapes already match (ND's embeddings of equal width).
        """
        s, t = tuple(student_shape), tuple(teacher_shape)
        if len(s) != len(t) or len(s) not in (2, 4):
            raise ConfigError(f"cannot project a student feature of shape {s} onto a teacher feature of shape {t}: "
                              "both must be (B, D) embeddings or both (B, C, H, W) maps")
        if identity_if_equal and s[1:] == t[1:]:
            return cls(nn.Identity())
        if len(s) == 2:
            return cls(nn.Linear(s[1], t[1]))
        out_size = None if s[2:] == t[2:] else (t[2], t[3])
        return cls(nn.Conv2d(s[1], t[1], kernel_size=1, bias=False), out_size)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        if self.out_size is not None:
            feature = F.adaptive_avg_pool2d(feature, self.out_size)
        return self.layer(feature)
