"""`medkd sweep` end to end on a tiny synthetic dataset: an SQLite study by default, nested selection (trials see
inner-validation patients only, teachers trained once), outputs, and a recommended recipe that `run` takes."""

import csv
import json

import optuna
import pytest
import yaml

from kdcore.config import load_recipe
from kdcore.cv import load_manifest
from medkd.cli import main
from medkd.config import OCTRecipe
from tests.medkd.sweep_tiny import write_sweep_inputs

TRIALS = 3
STUDENT_EPOCHS = 2


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("medkd_sweep")
    recipe, space = write_sweep_inputs(folder, STUDENT_EPOCHS)
    out = folder / "sweep"
    assert main(["sweep", str(recipe), "--space", str(space), "--trials", str(TRIALS), "--folds", "0",
                 "--out", str(out), "--seed", "0", "--no-prune"]) == 0
    return out


def _study(out):
    return optuna.load_study(study_name="kd_oct_demo-sweep", storage=f"sqlite:///{out / 'study.db'}")


def test_trials_are_recorded_in_the_sqlite_study_and_the_outputs(sweep):
    study = _study(sweep)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == len(complete) == TRIALS
    for trial in complete:
        assert set(trial.params) == {"student.kd_loss", "student.temperature"}
        assert 1.0 <= trial.params["student.temperature"] <= 8.0
        assert trial.values[0] == trial.user_attrs["val_metrics"]["accuracy"]
        fidelity = trial.user_attrs["fidelity"]
        assert 0.0 <= fidelity["agreement"] <= 1.0 and fidelity["kl"] >= 0.0
        # every validation epoch was reported to Optuna (what its pruners act on)
        assert len(trial.intermediate_values) == STUDENT_EPOCHS
    with open(sweep / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in rows] == [t.number for t in study.trials]
    assert {"value", "student.kd_loss", "student.temperature", "fidelity_agreement", "fidelity_kl"} <= set(rows[0])
    html = (sweep / "sweep.html").read_text()
    for section in ("Optimisation history", "Parameter importances", "Fidelity against accuracy", "Trials"):
        assert section in html
    assert html.count("data:image/png;base64,") >= 2


def test_trials_see_only_inner_validation_patients_and_share_one_teacher_per_fold(sweep):
    split = load_manifest(sweep / "teachers" / "folds.json").fold(0)
    teacher = sweep / "teachers" / "folds" / "fold_0" / "teacher"
    assert (teacher / "done.json").exists() and not (sweep / "teachers" / "folds" / "fold_1").exists()
    folders = sorted((sweep / "trials").glob("trial_*"))
    assert len(folders) == TRIALS
    for folder in [teacher, *(f / "fold_0" / "student" for f in folders)]:
        with open(folder / "predictions.csv") as f:
            patients = {row["patient"] for row in csv.DictReader(f)}
        assert patients and patients <= set(split.val), folder
        assert not patients & set(split.test), folder
    for folder in folders:
        assert not list(folder.rglob("teacher")), "a trial trains no teacher of its own"
        meta = json.loads((folder / "fold_0" / "student" / "model.json").read_text())
        assert meta["manifest"] == load_manifest(sweep / "teachers" / "folds.json").sha


def test_recommended_recipe_is_the_best_trial_and_medkd_run_takes_it(sweep, tmp_path):
    study = _study(sweep)
    best = study.best_trial
    recipe = load_recipe(OCTRecipe, sweep / "recommended.yaml")
    assert recipe.student.kd_loss == best.params["student.kd_loss"]
    assert recipe.student.temperature == pytest.approx(best.params["student.temperature"])
    assert yaml.safe_load((sweep / "recommended.yaml").read_text())["teacher"]["model"] == recipe.teacher.model
    assert main(["run", str(sweep / "recommended.yaml"), "--folds", "0", "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "folds" / "fold_0" / "student" / "done.json").exists()


def test_a_second_command_on_a_finished_study_adds_no_trial(sweep, tmp_path):
    recipe, space = write_sweep_inputs(tmp_path, STUDENT_EPOCHS)
    assert main(["sweep", str(recipe), "--space", str(space), "--trials", str(TRIALS), "--folds", "0",
                 "--out", str(sweep), "--seed", "0", "--no-prune"]) == 0
    assert len(_study(sweep).trials) == TRIALS
