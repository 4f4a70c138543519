"""Training engine: :class:`Trainer` runs one model on one fold from a :class:`TrainTask`."""

from .distributed import init_from_env, is_distributed, is_main_process
from .optim import build_optimizer, build_scheduler
from .trainer import FitResult, Trainer, TrainTask, move_to_device

__all__ = ["Trainer", "TrainTask", "FitResult", "move_to_device", "build_optimizer", "build_scheduler",
           "init_from_env", "is_distributed", "is_main_process"]
