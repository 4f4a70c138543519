"""Models trained together (online distillation): the partner's job writes the companion's folder too, the
companion is never trained alone, and a lost companion folder is an error naming the fix."""

import json
import shutil

import pytest

from kdcore.cv import make_fold_manifest
from kdcore.errors import ConfigError, DataError
from kdcore.fold_runner import FoldOutput, FoldRunner, ModelSpec
from kdcore.run_folder import RunDir
from tests.kdcore.test_fold_runner import cohort


def make_runner(path, calls, partner="student"):
    manifest = make_fold_manifest(*cohort(), 2, 0.25, seed=0)
    run = RunDir(path)
    run.path.mkdir(parents=True, exist_ok=True)
    manifest.save(run.path / "folds.json")

    def rows(name, ctx):
        return [{"id": p, "patient": p, "fold": ctx.fold, "model": name} for p in ctx.split.test]

    def train_teacher(ctx):
        raise AssertionError("a companion is never trained on its own")

    def train_student(ctx):
        calls.append(ctx.fold)
        columns = ["id", "patient", "fold", "model"]
        return FoldOutput(rows("student", ctx), columns, {"epochs_run": 2},
                          companions={"teacher": FoldOutput(rows("teacher", ctx), columns, {"trained_with": "student"})})

    specs = [ModelSpec("teacher", train_teacher, trained_with=partner), ModelSpec("student", train_student)]
    return FoldRunner(run, manifest, specs)


def test_partner_writes_the_companion_folder(tmp_path):
    calls = []
    runner = make_runner(tmp_path, calls)
    runner.run_folds()
    assert calls == [0, 1]
    for fold in (0, 1):
        done = json.loads((runner.model_dir("teacher", fold) / "done.json").read_text())
        assert done["trained_with"] == "student" and done["manifest"] == runner.manifest.sha
        assert done["predictions"]["rows"] == len(runner.manifest.fold(fold).test)
        assert {r["model"] for r in runner.predictions("teacher")} == {"teacher"}
    calls.clear()
    runner.run_folds()  # both finished: nothing is trained again
    assert calls == []


def test_a_lost_companion_folder_names_the_fix(tmp_path):
    runner = make_runner(tmp_path, [])
    runner.run_folds([0])
    shutil.rmtree(runner.model_dir("teacher", 0))
    with pytest.raises(DataError, match="teacher is trained together with student.*delete .*fold_0/student"):
        runner.run_folds([0])


def test_an_unknown_partner_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="'teacher' is trained with 'tutor'"):
        make_runner(tmp_path, [], partner="tutor").run_folds([0])
