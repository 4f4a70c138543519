"""Logging with one format, progress bars that stay quiet under CI, optional TensorBoard."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

__all__ = ["setup_logging", "get_logger", "progress", "progress_enabled", "set_progress", "TensorBoardLogger",
           "add_log_redaction", "redact_paths"]

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
T = TypeVar("T")
_progress_wanted = True
_redactions: list = []  # callables str -> str applied to run.log lines (not to the terminal)


class _SafeFormatter(logging.Formatter):
    """Never lets a file name in an odd encoding (a Latin-1 byte decoded as a surrogate) raise while logging:
    it is written as a backslash escape, and the line is kept."""

    def __init__(self, *args, redact: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if self._redact:
            for rewrite in list(_redactions):
                text = rewrite(text)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def redact_paths(replacements: dict[str, str]):
    """``text -> text`` with each absolute path (and its resolved form) replaced by its token, longest first.

    Example:
        >>> redact_paths({"/home/me/runs/r1": "<run>"})("wrote /home/me/runs/r1/report.html")
        'wrote <run>/report.html'
    """
    import re

    pairs: dict[str, str] = {}
    for path, token in replacements.items():
        if not path:
            continue
        variants = {str(path), str(Path(path).absolute())}
        try:
            variants.add(str(Path(path).resolve()))
        except OSError:
            pass
        for variant in variants:
            if len(variant.rstrip("/")) > 1:
                pairs[variant.rstrip("/")] = token
    if not pairs:
        return lambda text: text
    pattern = re.compile("|".join(re.escape(k) + r"(?![\w.-])" for k in sorted(pairs, key=len, reverse=True)))
    return lambda text: pattern.sub(lambda m: pairs[m.group(0)], text)


def add_log_redaction(rewrite) -> None:
    """Apply ``rewrite(text) -> text`` to every later line of the run's log file (e.g. machine paths, raw ids)."""
    _redactions.append(rewrite)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not the stream of the first call: a host
    that swaps stderr (pytest's capture, a notebook) never leaves the handler writing into a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(level: int | str = logging.INFO, logfile: str | os.PathLike | None = None) -> None:
    """Configure the root logger once: console on stderr, and a run's ``run.log`` when given."""
    root = logging.getLogger()
    root.setLevel(level)
    formatter = _SafeFormatter(LOG_FORMAT, DATE_FORMAT)
    if not any(getattr(h, "_kdvision", False) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        console = _StderrHandler()
        console.setFormatter(formatter)
        console._kdvision = True  # type: ignore[attr-defined]
        root.addHandler(console)
    if logfile is not None:
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler) and getattr(h, "_kdvision", False)]:
            root.removeHandler(handler)
            handler.close()
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        _redactions.clear()  # a new run folder: the previous run's rewrites do not apply
        file_handler = logging.FileHandler(logfile, encoding="utf-8", errors="backslashreplace")
        file_handler.setFormatter(_SafeFormatter(LOG_FORMAT, DATE_FORMAT, redact=True))
        file_handler._kdvision = True  # type: ignore[attr-defined]
        root.addHandler(file_handler)
    for noisy in ("PIL", "matplotlib", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def set_progress(enabled: bool) -> None:
    global _progress_wanted
    _progress_wanted = enabled


def progress_enabled() -> bool:
    """Bars only for a person at a terminal: off when ``CI`` is set or stderr is not a TTY."""
    return _progress_wanted and not os.environ.get("CI") and sys.stderr.isatty()


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, leave: bool = False) -> Iterable[T]:
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=not progress_enabled(), dynamic_ncols=True)


class TensorBoardLogger:
    """Scalars to TensorBoard when enabled; enabling it without tensorboard installed is an error, not a no-op.

    Under DDP only rank 0 writes: every rank writing event files into the shared run folder would show each
    curve once per GPU.
    """

    def __init__(self, log_dir: str | os.PathLike | None):
        from .engine.distributed import is_main_process

        self._writer = None
        if log_dir is None or not is_main_process():
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # pragma: no cover - depends on the environment
            from .errors import ConfigError

            raise ConfigError(f"runtime.tensorboard: true, but tensorboard is not installed ({exc}); "
                              "pip install tensorboard or set runtime.tensorboard=false") from None
        self._writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, tag_prefix: str, values: dict[str, float], step: int) -> None:
        if self._writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)):
                self._writer.add_scalar(f"{tag_prefix}/{key}", value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
