"""`facekd sweep`: the same machinery with two teachers per fold and a landmark objective (NME, minimised)."""

import csv

import optuna
import yaml

from facekd.cli import main
from kdcore.config import load_recipe
from kdcore.cv import load_manifest
from facekd.config import FaceRecipe
from tests.facekd.tiny import write_tiny_face_recipe


def test_face_sweep_minimises_validation_nme_with_both_teachers_trained_once(tmp_path):
    recipe = write_tiny_face_recipe(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"objective": "nme", "params": {
        "student.kd.main_weight": {"low": 1.0, "high": 3.0}, "student.train.lr": {"low": 1e-3, "high": 1e-2,
                                                                                   "log": True}}}))
    out = tmp_path / "sweep"
    assert main(["sweep", str(recipe), "--space", str(space), "--trials", "2", "--folds", "0", "--out", str(out),
                 "--seed", "0"]) == 0
    study = optuna.load_study(study_name=yaml.safe_load(recipe.read_text())["name"] + "-sweep",
                              storage=f"sqlite:///{out / 'study.db'}")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 2
    split = load_manifest(out / "teachers" / "folds.json").fold(0)
    for teacher in ("tough", "tolerant"):
        assert (out / "teachers" / "folds" / "fold_0" / teacher / "done.json").exists()
    for trial in (t for t in done if t.state.name == "COMPLETE"):
        assert trial.values[0] == trial.user_attrs["val_metrics"]["nme"] > 0
        assert {"agreement", "nme_to_teacher", "tolerant_agreement"} <= set(trial.user_attrs["fidelity"])
        with open(out / trial.user_attrs["folder"] / "fold_0" / "student" / "predictions.csv") as f:
            assert {r["subject"] for r in csv.DictReader(f)} <= set(split.val)
    best = load_recipe(FaceRecipe, out / "recommended.yaml")
    assert best.student.kd.main_weight == study.best_trial.params["student.kd.main_weight"]
