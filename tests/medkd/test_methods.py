"""Every distillation method of issue 13 selected with `--set` on the tiny demo recipe, run end to end: each
finishes and reports; ND stores its class means; USKD trains no teacher; an online run reports and exports its
teacher. The method recipes in pipelines/ are the demo with exactly these overrides."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from kdcore.checkpoint import load_weights
from kdcore.config import load_recipe
from medkd.cli import main
from medkd.config import OCTRecipe
from medkd.vertical import oct_network
from tests.medkd.tiny import REPO, write_tiny_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

# What selects each method, as `--set` overrides of pipelines/kd_oct_demo.yaml (README's method table).
LOGIT_DEFAULTS = {"student.temperature": None, "student.alpha": None}  # the demo's KD settings, reset to the loss's own
METHODS = {
    "nd": {"student.feature_loss": "nd"},
    "hint": {"student.feature_loss": "hint"},
    "uskd": {"student.kd_loss": "uskd", **LOGIT_DEFAULTS, "teacher.enabled": False},
    "dml": {"distillation": "online", "student.kd_loss": "dml", **LOGIT_DEFAULTS},
    "bdkd": {"distillation": "online", "student.kd_loss": "bdkd", **LOGIT_DEFAULTS},
}
# Smaller than tests/medkd/tiny.py: one epoch each, no SWA, no TTA, few bootstrap resamples.
FAST = {"data": {"image_size": 32}, "report": {"bootstrap": 20, "latency_runs": 1},
        "teacher": {"tta": False, "train": {"epochs": 1, "swa": {"enabled": False}}},
        "student": {"tta": False, "train": {"epochs": 1}}}


def sets(overrides: dict) -> list[str]:
    argv = []
    for key, value in overrides.items():
        argv += ["--set", f"{key}={'null' if value is None else json.dumps(value)}"]
    return argv


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    return write_tiny_recipe(tmp_path_factory.mktemp("methods"), **FAST)


def student_network_keys(recipe):
    network = oct_network(load_recipe(OCTRecipe, recipe), "student", ["NORMAL", "DRUSEN", "CNV"])
    return network.state_dict().keys()


def predictions(out):
    frames = [np.loadtxt(out / "folds" / f"fold_{k}" / "student" / "predictions.csv", delimiter=",", skiprows=1,
                         usecols=(6, 7, 8)) for k in (0, 1)]
    return np.concatenate(frames)


def retrain_students(out):
    for fold in (0, 1):
        shutil.rmtree(out / "folds" / f"fold_{fold}" / "student")


def run_code(recipe, out, method, *extra) -> int:
    return main(["run", str(recipe), "--out", str(out), *sets(METHODS[method]), *extra])


def run(recipe, out, method, *extra):
    assert run_code(recipe, out, method, *extra) == 0
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_recipe_is_the_demo_with_these_overrides(method):
    demo = load_recipe(OCTRecipe, REPO / "pipelines" / "kd_oct_demo.yaml",
                       overrides=[f"{k}={'null' if v is None else json.dumps(v)}" for k, v in METHODS[method].items()])
    recipe = load_recipe(OCTRecipe, REPO / "pipelines" / f"kd_oct_demo_{method}.yaml")
    assert recipe.model_dump(exclude={"name"}) == demo.model_dump(exclude={"name"})


def test_feature_losses_nd_then_hint_on_the_same_teachers(recipe, tmp_path):
    out = tmp_path / "run"
    report = run(recipe, out, "nd", "--set", "baseline.enabled=false")
    assert report["settings"]["student_objective"]["feature_loss"] == "nd" and "student_vs_teacher" in report["comparisons"]
    for fold in (0, 1):
        student = out / "folds" / f"fold_{fold}" / "student"
        means = np.load(student / "class_means.npy")
        assert means.shape[0] == 3 and np.isfinite(means).all() and (means != 0).any()
        assert json.loads((student / "done.json").read_text())["predictions"]["rows"] > 0
        # the projector trains with the student and is never part of it
        assert set(load_weights(student / "model.safetensors")) == set(student_network_keys(recipe))
    # The same teachers, students again (a changed student section retrains only the student): ND with the
    # teacher's logits and features from the lossless cache gives the student of the live teacher.
    teacher_done = (out / "folds" / "fold_0" / "teacher" / "done.json").read_text()
    live = predictions(out)
    retrain_students(out)
    run(recipe, out, "nd", "--set", "baseline.enabled=false", "--set", "student.teacher_cache=views", "--resume")
    assert (out / "folds" / "fold_0" / "teacher_cache" / "views" / "logits.feature.pooled.npy").is_file()
    np.testing.assert_allclose(predictions(out), live, atol=1e-5)
    retrain_students(out)
    report = run(recipe, out, "hint", "--set", "baseline.enabled=false", "--resume")
    assert report["settings"]["student_objective"]["feature_loss"] == "hint"
    assert (out / "folds" / "fold_0" / "teacher" / "done.json").read_text() == teacher_done
    assert not (out / "folds" / "fold_0" / "student" / "class_means.npy").exists()
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any(r.get("model") == "student" and "teacher_agreement" in r for r in records)


def test_uskd_trains_no_teacher_and_is_compared_with_the_baseline(recipe, tmp_path):
    out = tmp_path / "run"
    report = run(recipe, out, "uskd")
    assert not (out / "folds" / "fold_0" / "teacher").exists() and not (out / "folds" / "fold_1" / "teacher").exists()
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert not any(r.get("model") == "teacher" for r in records)
    assert set(report["models"]) == {"student", "baseline"}
    assert report["settings"]["distillation"] == "self-distilled"
    assert report["models"]["student"]["label"] == "student (self-distilled)"
    assert any("self-distilled" in note for note in report["notes"])
    assert report["comparisons"]["student_vs_baseline"]["available"]
    assert "self-distilled" in (out / "report.html").read_text()


@pytest.mark.parametrize("method", ["dml", "bdkd"])
def test_online_run_reports_and_exports_its_teacher(recipe, tmp_path, method, capsys):
    out = tmp_path / "run"
    report = run(recipe, out, method, "--set", "baseline.enabled=false")
    assert report["settings"]["distillation"] == "online"
    assert report["models"]["teacher"]["folds_done"] == [0, 1] and report["comparisons"]["student_vs_teacher"]["available"]
    for fold in (0, 1):
        for name in ("teacher", "student"):
            folder = out / "folds" / f"fold_{fold}" / name
            assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "model.json", "predictions.csv",
                                                          "done.json"}
            assert json.loads((folder / "model.json").read_text())["role"] == name
        done = json.loads((out / "folds" / f"fold_{fold}" / "teacher" / "done.json").read_text())
        assert done["trained_with"] == "student"
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("val_teacher_auc" in r for r in records if r.get("model") == "student")
    assert not any(r.get("model") == "teacher" for r in records)  # never trained on its own
    if method == "dml":
        assert main(["export", str(out), "--model", "teacher", "--fold", "0", "--format", "torchscript",
                     "--out", str(tmp_path / "export")]) == 0
        assert json.loads((tmp_path / "export" / "model.json").read_text())["role"] == "teacher"
        # A companion is never trained alone: its partner's finished folder without it names the fix.
        shutil.rmtree(out / "folds" / "fold_0" / "teacher")
        assert run_code(recipe, out, method, "--set", "baseline.enabled=false", "--resume") == 2
        err = capsys.readouterr().err
        assert "teacher is trained together with student" in err and "delete" in err



@pytest.mark.parametrize("overrides, key", [
    ({"teacher.enabled": False}, "teacher.enabled"),                                    # kd needs its teacher
    ({"student.kd_loss": "dml", **LOGIT_DEFAULTS}, "student.kd_loss"),                  # dml is online only
    ({"distillation": "online"}, "student.kd_loss"),                                    # kd is offline only
    ({**METHODS["dml"], "student.feature_loss": "hint"}, "student.feature_loss"),
    ({**METHODS["bdkd"], "student.teacher_cache": "views"}, "student.teacher_cache"),
    ({**METHODS["uskd"], "student.feature_loss": "nd"}, "student.feature_loss"),        # no teacher's features
])
def test_impossible_method_combinations_are_refused_naming_the_key(overrides, key, capsys):
    argv = ["config", str(REPO / "pipelines" / "kd_oct_demo.yaml"), *sets(overrides)]
    assert main(argv) == 2
    lines = [line.strip() for line in capsys.readouterr().err.splitlines() if line.startswith("  ")]
    assert len(lines) == 1 and lines[0].startswith(f"{key}:"), lines


@pytest.mark.parametrize("method", ["uskd", "dml"])
def test_sweeps_refuse_recipes_without_offline_teachers(method, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("objective: accuracy\nparams:\n  student.train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n")
    argv = ["sweep", str(REPO / "pipelines" / "kd_oct_demo.yaml"), "--space", str(space), "--trials", "1",
            "--out", str(tmp_path / "s"), *sets(METHODS[method])]
    assert main(argv) == 2
    assert "cannot be swept" in capsys.readouterr().err
    assert not (tmp_path / "s" / "teachers").exists()
