"""kdcore: the shared knowledge-distillation core (losses, teacher, engine, cross-validation, reports).

It knows nothing about OCT or faces: any timm model, any dataset that yields tensors.
"""

from .errors import CheckpointError, ConfigError, DataError, KDError, TrainingError

__version__ = "0.1.0"
__all__ = ["KDError", "ConfigError", "DataError", "CheckpointError", "TrainingError", "__version__"]
