"""The run folder and its contract: one owner for where a run's files are and what "finished" means.

Layout (docs/run-directory.md)::

    RUN/config.yaml        resolved recipe (after overrides)
    RUN/environment.json   python and package versions, git commit, seed, command line, machine
    RUN/folds.json         the fold manifest (written once)
    RUN/folds/fold_<k>/<model>/   model.safetensors + model.json, predictions.csv, last.pt while training
    RUN/folds/fold_<k>/<model>/done.json   written last: this model of this fold is finished
    RUN/folds/fold_<k>/<model>/class_means.npy   ND's teacher class means (C, D) of the fold's training images
    RUN/log.jsonl          one JSON record per logged event (epochs, evaluations)
    RUN/metrics.csv        the same numbers in long format: model,fold,epoch,split,name,value
    RUN/run.log            the Python log

A model of a fold is finished when, and only when, its ``done.json`` exists: the runner skips it, the report
reads it, export accepts it. Everything that asks goes through :class:`RunDir`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from .atomic import atomic_write_json, atomic_write_text
from .errors import ConfigError, DataError, KDError

__all__ = ["RunDir", "Coverage", "DONE_MARKER", "CLASS_MEANS_FILE", "environment_info", "default_run_dir", "lock_run_folder", "release_run_folder",
           "remove_orphan_temporaries", "LOCK_NAME"]

LOCK_NAME = ".run.lock"
DONE_MARKER = "done.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FILE = "last.pt"
CLASS_MEANS_FILE = "class_means.npy"
_held_locks: dict[str, int] = {}  # resolved run folder -> open descriptor holding its flock


def lock_run_folder(path: str | os.PathLike) -> None:
    """Take the exclusive lock of a run folder for this process (again: a no-op), or raise naming the holder.

    ``flock`` dies with its process, so the lock of a killed run is free at once: its stale ``.run.lock``
    file is simply taken over. Released by :func:`release_run_folder` or when the process exits.
    """
    import fcntl
    import socket

    folder = Path(path)
    key = str(folder.resolve())
    if key in _held_locks:
        return
    lock_path = folder / LOCK_NAME
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise KDError(f"{folder}: another run is writing this folder (process {holder}); wait for it to "
                          "finish, or choose another --out") from None
        try:  # the holder may have removed the file between our open and our lock: lock the current one
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode())
    _held_locks[key] = fd


def release_run_folder(path: str | os.PathLike) -> None:
    """Remove the lock file and release the lock (if this process holds it)."""
    key = str(Path(path).resolve())
    fd = _held_locks.pop(key, None)
    if fd is None:
        return
    try:
        (Path(key) / LOCK_NAME).unlink(missing_ok=True)
    finally:
        os.close(fd)


def _release_all() -> None:
    for key in list(_held_locks):
        release_run_folder(key)


import atexit  # noqa: E402 - registered beside the state it cleans up

atexit.register(_release_all)


def remove_orphan_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.<random>.tmp`` files a killed atomic write left in a run folder (we hold its lock,
    so no writer of ours is using them); returns what was removed."""
    removed = []
    for tmp in Path(path).rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed

TRACKED_PACKAGES = ("kdvision", "torch", "torchvision", "timm", "monai", "albumentations", "numpy", "scikit-learn",
                    "scipy", "opencv-python-headless", "onnx", "onnxruntime",
                    "onnxruntime-gpu", "pydantic", "safetensors")
METRIC_COLUMNS = ("time", "model", "fold", "epoch", "split", "name", "value")


def default_run_dir(recipe_name: str, root: str | os.PathLike = "runs") -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{recipe_name}-{stamp}"


def _git_commit() -> dict[str, Any] | None:
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain"], cwd=source, capture_output=True, text=True, timeout=10)
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info(seed: int | None = None) -> dict[str, Any]:
    """Versions and machine facts that a reader needs to reproduce a run."""
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
        "git": _git_commit(),
        "seed": seed,
        "command": sys.argv,
        "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover
        pass
    return info


class Coverage(dict):
    """``model -> {"done": [folds], "missing": [folds], "incomplete": [folds]}`` for the models a run expects:
    which folds a report covers, as data (``incomplete``: a folder without ``done.json``, running or killed)."""

    @property
    def partial(self) -> dict[str, dict[str, list[int]]]:
        """The models not finished on every fold."""
        return {name: entry for name, entry in self.items() if entry["missing"]}

    def notes(self) -> list[str]:
        """One readable line per model that is missing folds."""
        lines = []
        for name, entry in self.partial.items():
            if not entry["done"]:
                lines.append(f"{name}: no completed fold in this run")
            else:
                lines.append(f"{name}: fold(s) {entry['missing']} not completed; results cover fold(s) "
                             f"{entry['done']}")
        return lines


class RunDir:
    """A run's output folder. Create with :meth:`create`; reopen an existing one with ``RunDir(path)``.

    Example:
        >>> import tempfile
        >>> run = RunDir(tempfile.mkdtemp())
        >>> run.model_dir("student", 0).relative_to(run.path).as_posix()
        'folds/fold_0/student'
        >>> run.is_finished("student", 0)
        False
        >>> _ = run.finish_model("student", 0, {"manifest": "abc"})
        >>> run.finished_folds("student", [0, 1]), run.coverage(["student"], [0, 1]).partial["student"]["missing"]
        ([0], [1])
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()

    # ------------------------------------------------------------ models of folds

    def model_dir(self, model: str, fold: int) -> Path:
        return self.path / "folds" / f"fold_{fold}" / model

    def weights(self, model: str, fold: int) -> Path:
        return self.model_dir(model, fold) / WEIGHTS_FILE

    def done_record(self, model: str, fold: int) -> dict[str, Any] | None:
        """The ``done.json`` of a finished model (None while it is not finished)."""
        marker = self.model_dir(model, fold) / DONE_MARKER
        if not marker.is_file():
            return None
        try:
            record = json.loads(marker.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise KDError(f"{marker}: not valid JSON ({exc}); delete the fold's folder and --resume") from None
        return record if isinstance(record, dict) else {}

    def is_finished(self, model: str, fold: int, manifest_sha: str | None = None) -> bool:
        """Whether ``model`` of ``fold`` is finished; with ``manifest_sha``, one trained on another manifest is
        an error (this folder would mix two runs)."""
        record = self.done_record(model, fold)
        if record is None:
            return False
        if manifest_sha is not None and record.get("manifest") not in (None, manifest_sha):
            raise DataError(f"{self.model_dir(model, fold) / DONE_MARKER}: trained on another fold manifest "
                          f"({record.get('manifest')} vs {manifest_sha}); this folder mixes two runs: use a new --out")
        return True

    def finish_model(self, model: str, fold: int, record: dict[str, Any]) -> Path:
        """Mark ``model`` of ``fold`` finished: written last, after its weights and predictions."""
        marker = self.model_dir(model, fold) / DONE_MARKER
        atomic_write_json(marker, record)
        return marker

    def finished_folds(self, model: str, folds: Any) -> list[int]:
        return [k for k in folds if self.is_finished(model, k)]

    def folds_on_disk(self) -> list[int]:
        """Fold numbers with a ``folds/fold_<k>`` folder (a run may hold only some folds of its manifest)."""
        found = []
        for folder in (self.path / "folds").glob("fold_*"):
            number = folder.name.split("_", 1)[1]
            if folder.is_dir() and number.isdigit():
                found.append(int(number))
        return sorted(found)

    def models_on_disk(self, folds: Any, manifest_sha: str | None = None) -> tuple[dict[str, list[int]],
                                                                                     dict[str, list[int]]]:
        """``(finished, unfinished)``: model name -> folds, over every model folder of ``folds``."""
        finished: dict[str, list[int]] = {}
        unfinished: dict[str, list[int]] = {}
        for fold in folds:
            fold_dir = self.path / "folds" / f"fold_{fold}"
            if not fold_dir.is_dir():
                continue
            for model_dir in sorted(p for p in fold_dir.iterdir() if p.is_dir()):
                name = model_dir.name
                if name.startswith(".") or name.endswith(".merging") or name == "teacher_cache":
                    continue
                done = self.is_finished(name, fold, manifest_sha)
                (finished if done else unfinished).setdefault(name, []).append(fold)
        return finished, unfinished

    def coverage(self, models: Any, folds: Any) -> Coverage:
        """Which of ``folds`` each of ``models`` has finished, missing, or left unfinished."""
        folds = list(folds)
        result = Coverage()
        for model in models:
            done = self.finished_folds(model, folds)
            result[model] = {"done": done, "missing": [k for k in folds if k not in done],
                             "incomplete": [k for k in folds if k not in done and self.model_dir(model, k).is_dir()]}
        return result

    def holds_progress(self) -> bool:
        """Whether the folder holds work worth keeping for ``--resume``: a finished model or a checkpoint."""
        return self.path.is_dir() and any(p.name in (DONE_MARKER, CHECKPOINT_FILE) for p in self.path.rglob("*"))

    @classmethod
    def create(cls, path: str | os.PathLike, config: Any, seed: int, comparable: dict | None = None,
               affects: dict[str, Any] | None = None) -> "RunDir":
        """Create (or reuse, for another set of folds or a resume) the run folder and record the setup.

        ``comparable`` is the part of the config that must match when the folder already holds a run,
        so that fold jobs split over machines and resumed runs cannot mix two different experiments.
        ``affects`` maps a section to the models it changes (``{"student": ["student", "baseline"]}``): a
        changed section listed there is accepted once those models have nothing in ``folds/`` (they are then
        retrained, the others kept), and otherwise the error names exactly the folders to delete.
        """
        run = cls(path)
        run._ensure_writable()
        lock_run_folder(run.path)
        if (run.path / "config.yaml").exists():  # a run resumed after a kill: its writes were cut short
            remove_orphan_temporaries(run.path)
        resolved = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
        stored = run.path / "config.yaml"
        if stored.exists() and comparable is not None:
            try:
                previous = yaml.safe_load(stored.read_text(encoding="utf-8")) or {}
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{stored}: the run's recorded recipe is not valid YAML ({type(exc).__name__}); "
                                  "it cannot be resumed: choose a new --out") from None
            if not isinstance(previous, dict):
                raise ConfigError(f"{stored}: the run's recorded recipe is not a mapping of keys (got "
                                  f"{type(previous).__name__}); it cannot be resumed: choose a new --out")
            mismatched = sorted(k for k in comparable if previous.get(k) != comparable[k])
            if mismatched and (affects is None or any(k not in affects for k in mismatched)):
                raise ConfigError(
                    f"{run.path}: holds a run with a different recipe (differs in: {', '.join(mismatched)}); "
                    "choose a new --out, or run with the same recipe to resume or add folds")
            if mismatched:
                run._check_retrainable(mismatched, affects or {})
        atomic_write_text(stored, yaml.safe_dump(resolved, sort_keys=False))
        env = environment_info(seed)
        env_file = run.path / "environment.json"
        if env_file.exists():
            env["previous_invocations"] = _previous_invocations(env_file)
        atomic_write_json(env_file, env)
        return run

    def _check_retrainable(self, sections: list[str], affects: dict[str, Any]) -> None:
        models = sorted({m for k in sections for m in affects[k]})
        kept = [p for m in models for p in sorted(self.path.glob(f"folds/fold_*/{m}"))
                if p.is_dir() and any(p.iterdir())]
        if kept:
            listed = " ".join(str(p) for p in kept)
            raise ConfigError(
                f"{self.path}: holds a run made with another {', '.join(sections)} section, which changes only the "
                f"{', '.join(models)} model(s). To keep the other models and retrain these: delete {listed}, then "
                "run again with --resume; or choose a new --out")

    def _ensure_writable(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise KDError(f"{self.path}: output directory is not writable ({exc.strerror or exc})") from None

    # ------------------------------------------------------------ streams

    def log_event(self, record: dict[str, Any]) -> None:
        """Append one record to log.jsonl and its numeric fields to metrics.csv (long format)."""
        record = {"time": round(_time(), 3), **record}
        line = json.dumps(record, default=str, allow_nan=True)
        rows = []
        for name, value in record.items():
            if name in METRIC_COLUMNS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            rows.append([record["time"], record.get("model", ""), record.get("fold", ""), record.get("epoch", ""),
                         record.get("split", ""), name, value])
        with self._lock:
            with open(self.path / "log.jsonl", "a", encoding="utf-8") as f:
                f.write(line + "\n")
            metrics = self.path / "metrics.csv"
            new = not metrics.exists()
            with open(metrics, "a", encoding="utf-8", newline="") as f:
                writer = csv.writer(f)
                if new:
                    writer.writerow(METRIC_COLUMNS)
                writer.writerows(rows)

    def write_json(self, relative: str, obj: Any) -> Path:
        target = self.path / relative
        atomic_write_json(target, obj)
        return target

    def write_text(self, relative: str, text: str) -> Path:
        target = self.path / relative
        atomic_write_text(target, text)
        return target

    def sub(self, *parts: str | int) -> Path:
        folder = self.path.joinpath(*map(str, parts))
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def _time() -> float:
    import time

    return time.time()


def _previous_invocations(env_file: Path) -> list:
    try:
        old = json.loads(env_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    history = old.pop("previous_invocations", [])
    return history + [{"started": old.get("started"), "command": old.get("command"), "git": old.get("git")}]
