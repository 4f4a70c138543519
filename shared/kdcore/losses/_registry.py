"""Losses by name, so a recipe can say ``loss: {name: dkd, beta: 8}`` (in the manner of torchdistill).

Example:
    >>> loss = build_loss("kd", temperature=4.0, alpha=0.3)
    >>> type(loss).__name__
    'KDLoss'
    >>> build_loss("kd", temp=4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    kdcore.errors.ConfigError: loss 'kd': unknown argument 'temp' (did you mean 'temperature'?); valid ...
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, TypeVar

from torch import nn

from ..errors import ConfigError

__all__ = ["register_loss", "build_loss", "list_losses", "distillation_losses", "feature_losses",
           "self_distillation_losses", "online_losses"]

_LOSSES: dict[str, type[nn.Module]] = {}
M = TypeVar("M", bound=type[nn.Module])


def register_loss(name: str) -> Callable[[M], M]:
    """Class decorator: make an ``nn.Module`` loss buildable by ``name`` (may be stacked for aliases)."""

    def decorator(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"register_loss({name!r}) needs an nn.Module subclass, got {cls!r}")
        known = _LOSSES.get(name)
        # re-registering the same class (a module re-import) is harmless; a different class is a clash
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"loss name {name!r} is already registered to {known.__module__}.{known.__qualname__}")
        _LOSSES[name] = cls
        return cls

    return decorator


def list_losses() -> list[str]:
    """Sorted names accepted by :func:`build_loss`."""
    return sorted(_LOSSES)


def distillation_losses() -> list[str]:
    """Names of the losses called with teacher logits (``uses_teacher``), the ones a student can distil with."""
    return sorted(name for name, cls in _LOSSES.items() if getattr(cls, "uses_teacher", False))


def feature_losses() -> list[str]:
    """Names of the losses on intermediate features of student and teacher (``student.feature_loss``)."""
    return sorted(name for name, cls in _LOSSES.items() if getattr(cls, "needs_teacher_features", False))


def self_distillation_losses() -> list[str]:
    """Names of the losses that distil a student from itself, with no teacher (``uses_feature`` only)."""
    return sorted(name for name, cls in _LOSSES.items() if getattr(cls, "uses_feature", False)
                  and not getattr(cls, "uses_teacher", False) and not getattr(cls, "needs_teacher_features", False))


def online_losses() -> list[str]:
    """Names of the distillation losses that need online distillation (teacher and student trained together)."""
    return sorted(name for name, cls in _LOSSES.items() if getattr(cls, "online_only", False))


def _suggest(word: str, choices: list[str]) -> str:
    # prefixes first: "temp" is too short for difflib to match "temperature"
    close = [c for c in choices if word and (c.startswith(word) or word.startswith(c))]
    close = close or difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss registered as ``name`` with keyword arguments from a recipe.

    Raises:
        ConfigError: unknown name (lists the known ones), unknown argument (names it) or an invalid value.
    """
    cls = _LOSSES.get(name)
    if cls is None:
        raise ConfigError(f"unknown loss {name!r}{_suggest(str(name), list_losses())}; "
                          f"known losses: {', '.join(list_losses())}")
    params = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        for key in kwargs:
            if key not in params:
                raise ConfigError(f"loss {name!r}: unknown argument {key!r}{_suggest(key, list(params))}; "
                                  f"valid arguments: {', '.join(params)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"loss {name!r}: {error}") from error
