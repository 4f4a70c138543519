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

from .errors import CheckpointError, ConfigError, DataError, KDError, TrainingError
from .front_door import front_door as _front_door

# Public name -> the module that owns it (imported on first attribute access).
__all__, __getattr__, __dir__ = _front_door(__name__, {
    "Trainer": ".engine",
    "build_loss": ".losses",
    "list_losses": ".losses",
    "FoldRunner": ".fold_runner",
    "make_fold_manifest": ".cv",
    "FoldManifest": ".cv",
    "Vertical": ".vertical",
}, eager=(KDError.__name__, ConfigError.__name__, DataError.__name__, CheckpointError.__name__,
          TrainingError.__name__))
