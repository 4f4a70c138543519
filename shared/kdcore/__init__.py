"""kdcore: the shared knowledge-distillation core (losses, teacher, engine, cross-validation, reports).

It knows nothing about OCT or faces: any timm model, any dataset that yields tensors. The names a user starts
from are importable from here; they are loaded on first use, so ``import kdcore`` stays cheap.

Example:
    >>> import kdcore
    >>> from kdcore import build_loss, make_fold_manifest
    >>> "kd" in kdcore.list_losses()
    True
    >>> patients = [f"p{i}" for i in range(8)]
    >>> manifest = make_fold_manifest(patients, None, n_folds=2, val_fraction=0.25, seed=0)
    >>> len(manifest.folds)
    2
"""

from __future__ import annotations

import importlib as _importlib
from typing import Any as _Any

from .errors import CheckpointError, ConfigError, DataError, KDError, TrainingError

# Public name -> the module that owns it (imported on first attribute access, PEP 562).
_LAZY = {
    "Trainer": ".engine",
    "build_loss": ".losses",
    "list_losses": ".losses",
    "FoldRunner": ".fold_runner",
    "make_fold_manifest": ".cv",
    "FoldManifest": ".cv",
    "Vertical": ".vertical",
}

__all__ = ["Trainer", "build_loss", "list_losses", "FoldRunner", "make_fold_manifest", "FoldManifest", "Vertical",
           "KDError", "ConfigError", "DataError", "CheckpointError", "TrainingError", "__version__"]


def _installed_version() -> str:
    """The version of the installed ``kdvision`` distribution: pyproject.toml is the one place it is written."""
    from importlib.metadata import PackageNotFoundError, version  # slow to import: only when asked
    try:
        return version("kdvision")
    except PackageNotFoundError as err:  # a source tree that was never `pip install -e .`d
        raise ImportError("kdvision is not installed, so it has no version: run `pip install -e .` in the "
                          "repository") from err


def __getattr__(name: str) -> _Any:
    if name == "__version__":
        value: _Any = _installed_version()
    elif name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return list(__all__)
