"""Reading a training run folder for export: its trained models per fold, the fold to export, its files.

A run (``medkd run``, ``facekd run``) holds ``config.yaml``, ``dataset.json``, ``folds.json``,
``environment.json``, ``report.json`` and ``folds/fold_<k>/<model>/model.safetensors`` with ``model.json``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import KDError
from ..run_folder import RunDir

__all__ = ["RunModel", "find_run_models", "lower_is_better", "select_folds", "load_run_model", "read_run_file",
           "run_source", "report_means", "run_data_root", "run_items", "pick_items"]


@dataclass
class RunModel:
    """One trained model of a run: ``RUN/folds/fold_<k>/<name>/model.safetensors`` and its ``model.json``."""

    run_dir: Path
    fold: int
    name: str
    weights: Path
    meta: dict[str, Any]


def find_run_models(run_dir: str | os.PathLike, model: str = "student") -> dict[int, RunModel]:
    """Every fold of ``run_dir`` holding final weights of ``model`` (fold -> :class:`RunModel`)."""
    from ..checkpoint import read_meta

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise KDError(f"{run_dir}: not a run folder (no config.yaml)")
    run = RunDir(run_dir)
    finished, unfinished_models = run.models_on_disk(run.folds_on_disk())
    unfinished = unfinished_models.get(model, [])
    found = {}
    for fold in finished.get(model, []):  # the run folder decides "finished"
        weights = run.weights(model, fold)
        if not weights.is_file():
            raise KDError(f"{weights}: missing, although fold {fold} of {model!r} is marked finished; delete the "
                          "fold's folder and --resume the run")
        found[fold] = RunModel(run_dir, fold, model, weights, read_meta(weights))
    if not found:
        names = sorted(set(finished) | set(unfinished_models))
        raise KDError(f"{run_dir}: no trained {model!r} weights (folds/fold_<k>/{model}/model.safetensors with "
                      "its done.json)" + (f"; fold(s) {unfinished} not finished (no done.json): --resume the run first"
                                      if unfinished else "")
                      + (f"; models present: {', '.join(names)}" if names else ""))
    return found


def lower_is_better(monitor: str | None, mode: str | None = None) -> bool:
    """Whether a smaller ``monitor`` value is better.

    ``mode`` (``"min"`` or ``"max"``, the monitor's direction that the trainer writes into ``model.json``)
    decides; runs older than that key fall back to the monitor's name: losses and errors are minimised.

    Example:
        >>> lower_is_better("val_loss"), lower_is_better("nme"), lower_is_better("balanced_accuracy")
        (True, True, False)
        >>> lower_is_better("score", mode="min")
        True
    """
    if mode is not None:
        if mode not in ("min", "max"):
            raise KDError(f"monitor mode {mode!r} for {monitor!r}: expected 'min' or 'max'")
        return mode == "min"
    words = set(re.split(r"[^a-z0-9]+", (monitor or "").lower()))
    return bool(words & {"loss", "nme", "error", "fr", "ece", "brier", "mae", "mse", "rmse"})


def select_folds(models: Mapping[int, RunModel], folds: int | Sequence[int] | str | None) -> list[int]:
    """``"all"`` -> every fold; an int or list -> those (checked); None -> the fold whose model has the best
    validation score (``best_score`` of ``model.json``, direction from its ``mode``, else from ``monitor``)."""
    available = sorted(models)
    if folds == "all":
        return available
    if folds is None:
        scored = [k for k in available if isinstance(models[k].meta.get("best_score"), (int, float))]
        if not scored:
            raise KDError(f"no fold has a best_score in model.json to choose from (folds {available}); "
                          "choose a fold explicitly")
        meta = models[scored[0]].meta
        try:
            sign = 1.0 if lower_is_better(meta.get("monitor"), meta.get("mode")) else -1.0
        except KDError as exc:
            raise KDError(f"{models[scored[0]].weights.with_suffix('.json')}: {exc}") from None
        return [min(scored, key=lambda k: (sign * models[k].meta["best_score"], k))]
    wanted = [folds] if isinstance(folds, int) else list(folds)
    missing = [k for k in wanted if k not in models]
    if missing:
        name = next(iter(models.values())).name
        raise KDError(f"fold(s) {missing} have no finished {name!r} (a fold counts once its done.json is written; "
                      f"available: {available})")
    return sorted(set(wanted))


def load_run_model(entry: RunModel) -> Any:
    """Rebuild the architecture from ``model.json`` and load the weights (no hub access, CPU, eval mode)."""
    from ..checkpoint import check_bound_meta, load_weights
    from ..models import build_model

    meta = entry.meta
    check_bound_meta(entry.weights, meta)  # an edited class order or architecture is refused, not exported
    missing = [k for k in ("arch", "num_outputs") if k not in meta]
    if missing:
        raise KDError(f"{entry.weights.with_suffix('.json')}: missing keys {missing}")
    model = build_model(meta)
    try:
        result = model.load_state_dict(load_weights(entry.weights), strict=False)
    except RuntimeError as exc:  # tensor shapes of another architecture or class count
        first = str(exc).strip().splitlines()[1:2] or [str(exc)[:200]]
        raise KDError(f"{entry.weights}: weights do not fit {meta['arch']!r} with {meta['num_outputs']} outputs "
                      f"as model.json says ({first[0].strip()})") from None
    if result.missing_keys or result.unexpected_keys:
        raise KDError(f"{entry.weights}: weights do not fit {meta['arch']!r} (missing {list(result.missing_keys)[:5]}, "
                      f"unexpected {list(result.unexpected_keys)[:5]})")
    return model.eval()


def read_run_file(run_dir: str | os.PathLike, name: str) -> Any:
    """A JSON or YAML file of the run, or None when it is absent."""
    path = Path(run_dir) / name
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except ValueError as exc:
        raise KDError(f"{path}: unreadable ({exc})") from None


def run_source(entry: RunModel) -> dict[str, Any]:
    """Where an exported model comes from: recipe, run folder name, fold, manifest, commit (no paths)."""
    config = read_run_file(entry.run_dir, "config.yaml") or {}
    env = read_run_file(entry.run_dir, "environment.json") or {}
    git = env.get("git") or {}
    meta = entry.meta
    return {
        "recipe": meta.get("recipe") or config.get("name") or config.get("recipe") or entry.run_dir.name,
        "run": entry.run_dir.name, "fold": entry.fold, "model": entry.name, "role": meta.get("role"),
        "manifest": meta.get("manifest"), "git_commit": git.get("commit"), "git_dirty": git.get("dirty"),
        "kept": meta.get("kept"), "best_epoch": meta.get("best_epoch"), "best_score": meta.get("best_score"),
        "monitor": meta.get("monitor"), "epochs_run": meta.get("epochs_run"), "seed": env.get("seed"),
    }


def report_means(run_dir: str | os.PathLike, model: str) -> dict[str, float]:
    """``metric -> mean`` of ``report.json``'s ``models.<model>.summary`` ({} without a report)."""
    report = read_run_file(run_dir, "report.json") or {}
    summary = ((report.get("models") or {}).get(model) or {}).get("summary") or {}
    return {name: value["mean"] for name, value in summary.items()
            if isinstance(value, Mapping) and isinstance(value.get("mean"), (int, float))}


def run_data_root(run_dir: str | os.PathLike) -> Path | None:
    """The run's data folder: ``data.root`` of its config (relative roots are tried from the working
    directory, the run folder and its parent), else ``RUN/data`` (synthetic data generated in the run)."""
    run_dir = Path(run_dir)
    config = read_run_file(run_dir, "config.yaml") or {}
    data = config.get("data") if isinstance(config, dict) else None
    root = data.get("root") if isinstance(data, dict) else None
    if not root:
        return run_dir / "data" if (run_dir / "data").is_dir() else None
    root = Path(str(root)).expanduser()
    candidates = [root] if root.is_absolute() else [Path.cwd() / root, run_dir / root, run_dir.parent / root]
    return next((c for c in candidates if c.is_dir()), None)


def run_items(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The items of ``dataset.json`` (a list, or a mapping with ``items``); [] when absent."""
    data = read_run_file(run_dir, "dataset.json")
    if data is None:
        return []
    items = data.get("items", data.get("records")) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise KDError(f"{Path(run_dir) / 'dataset.json'}: expected a list of items (or {{'items': [...]}})")
    return [item for item in items if isinstance(item, dict)]


def pick_items(items: Sequence[dict[str, Any]], n: int, groups: Iterable[str] | None = None,
               group_key: str = "patient", label_key: str = "label") -> list[dict[str, Any]]:
    """Up to ``n`` items, from ``groups`` (e.g. the fold's test patients) when given, spread over labels."""
    pool = list(items)
    if groups is not None:
        wanted = set(map(str, groups))
        preferred = [item for item in pool if str(item.get(group_key)) in wanted]
        pool = preferred or pool
    by_label: dict[str, list[dict[str, Any]]] = {}
    for item in sorted(pool, key=lambda i: str(i.get("id", i.get("path", "")))):
        by_label.setdefault(str(item.get(label_key)), []).append(item)
    picked: list[dict[str, Any]] = []
    queues = [by_label[k] for k in sorted(by_label)]
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    return picked
