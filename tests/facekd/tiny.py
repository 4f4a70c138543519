"""A tiny face KD recipe for end-to-end tests: the demo recipe shrunk (not a test module)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.medkd.tiny import REPO, _merge

TINY_OVERRIDES = {
    "data": {"image_size": 48, "synthetic": {"faces": 36, "subjects": 12, "image_size": [128, 128]}},
    "cv": {"folds": 2, "val_fraction": 0.25},
    "tough": {"train": {"epochs": 2, "batch_size": 8}},
    "tolerant": {"train": {"epochs": 2, "batch_size": 8}},
    "student": {"train": {"epochs": 2, "batch_size": 8}},
    "report": {"bootstrap": 50, "latency_runs": 2},
}


def write_tiny_face_recipe(folder: Path, **sections) -> Path:
    recipe = yaml.safe_load((REPO / "pipelines" / "face_kd_demo.yaml").read_text())
    recipe = _merge(_merge(recipe, TINY_OVERRIDES), sections)
    path = folder / "tiny_face.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path
