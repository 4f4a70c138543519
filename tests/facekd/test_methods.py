"""facekd and the distillation methods of issue 13: FitNets hints work for landmark regression (from the tough
teacher's pooled embedding, beside the KD-Loss); the classification-only methods are refused at recipe load with
one line naming the key."""

from __future__ import annotations

import json

import pytest

from facekd.cli import main
from tests.facekd.tiny import write_tiny_face_recipe
from tests.medkd.tiny import REPO

pytestmark = pytest.mark.usefixtures("one_thread")


def test_hint_run_trains_the_projector_beside_the_kd_loss_and_reports(tmp_path):
    recipe = write_tiny_face_recipe(tmp_path, data={"image_size": 32}, report={"bootstrap": 20, "latency_runs": 1},
                                    tough={"train": {"epochs": 1}}, tolerant={"train": {"epochs": 1}},
                                    student={"train": {"epochs": 1}}, baseline={"enabled": False})
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "--set", "student.feature_loss=hint"]) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    hints = [r["hint"] for r in records if r.get("model") == "student" and "hint" in r]
    assert len(hints) == 2 and all(h > 0 for h in hints)  # one epoch on each of the two folds
    report = json.loads((out / "report.json").read_text())
    assert report["models"]["student"]["folds_done"] == [0, 1]
    from kdcore.checkpoint import load_weights

    weights = load_weights(out / "folds" / "fold_0" / "student" / "model.safetensors")
    assert not any("projector" in key for key in weights)  # trained with the student, never part of it


@pytest.mark.parametrize("key, value", [
    ("student.kd_loss", "uskd"), ("student.kd_loss", "nkd"), ("student.kd_loss", "dkd"),
    ("student.feature_loss", "nd"), ("distillation", "online"), ("student.temperature", "4"),
])
def test_classification_only_methods_are_refused_in_one_line(key, value, capsys):
    assert main(["config", str(REPO / "pipelines" / "face_kd_demo.yaml"), "--set", f"{key}={value}"]) == 2
    lines = [line.strip() for line in capsys.readouterr().err.splitlines() if line.startswith("  ")]
    assert len(lines) == 1 and lines[0].startswith(f"{key}:"), lines
    assert "classif" in lines[0] or "KD-Loss" in lines[0]


def test_the_hint_recipe_is_the_face_demo_with_hints():
    from facekd.config import FaceRecipe
    from kdcore.config import load_recipe

    demo = load_recipe(FaceRecipe, REPO / "pipelines" / "face_kd_demo.yaml", overrides=["student.feature_loss=hint"])
    hint = load_recipe(FaceRecipe, REPO / "pipelines" / "face_kd_demo_hint.yaml")
    assert hint.model_dump(exclude={"name"}) == demo.model_dump(exclude={"name"})
