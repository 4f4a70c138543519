"""Errors that reach the user as one clear line (the CLIs print them without a traceback)."""

__all__ = ["KDError", "ConfigError", "DataError", "CheckpointError", "TrainingError"]


class KDError(Exception):
    """Base class of every error caused by the user's input rather than a bug in this package."""


class ConfigError(KDError, ValueError):
    """A recipe or command-line override is invalid; the message names the key path."""


class DataError(KDError, ValueError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file (and line)."""


class CheckpointError(KDError, ValueError):
    """A checkpoint is unsafe, corrupt or does not belong to this model/fold."""


class TrainingError(KDError, RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message names the epoch and step."""
