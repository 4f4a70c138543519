"""A tiny KD-OCT recipe for end-to-end tests: the demo recipe with everything shrunk (not a test module)."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

TINY_OVERRIDES = {
    "data": {"image_size": 48, "synthetic": {"patients": 18, "image_size": [192, 124], "scans_per_eye": [1, 2]}},
    # 3 of the 9 training patients of a fold validate: one per class, so the validation AUC is defined
    "cv": {"folds": 2, "val_fraction": 0.34},
    "teacher": {"train": {"epochs": 3, "batch_size": 8, "patience": None,
                          "swa": {"enabled": True, "start_epoch": 1, "lr": 1.0e-3}}},
    "student": {"train": {"epochs": 2, "batch_size": 8, "patience": None}},
    "report": {"bootstrap": 50, "latency_runs": 2},
}


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(base.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


def write_tiny_recipe(folder: Path, **sections) -> Path:
    recipe = yaml.safe_load((REPO / "pipelines" / "kd_oct_demo.yaml").read_text())
    recipe = _merge(_merge(recipe, TINY_OVERRIDES), sections)
    path = folder / "tiny_oct.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path
