"""facekd: facial landmark regression distilled with Fard & Mahoor's KD-Loss, on the kdcore engine.

The names a user starts from are importable from here; they are loaded on first use, so ``import facekd`` stays
cheap (no torch until one of them is touched).

Example:
    >>> import facekd
    >>> sorted(facekd.__all__)
    ['FaceRecipe', 'LandmarkDetector', '__version__', 'main', 'run_pipeline']
    >>> from facekd import LandmarkDetector, run_pipeline
"""

from __future__ import annotations

import importlib as _importlib
from typing import Any as _Any

# Public name -> the module that owns it (imported on first attribute access, PEP 562).
_LAZY = {
    "run_pipeline": ".pipeline",
    "LandmarkDetector": ".predictor",
    "FaceRecipe": ".config",
    "main": ".cli",
}

__all__ = ["run_pipeline", "LandmarkDetector", "FaceRecipe", "main", "__version__"]


def __getattr__(name: str) -> _Any:
    if name == "__version__":  # one version for the whole distribution: kdcore reads it from the metadata
        value: _Any = _importlib.import_module("kdcore").__version__
    elif name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return list(__all__)
