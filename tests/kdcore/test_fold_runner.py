import pytest

from kdcore.cv import make_fold_manifest
from kdcore.errors import ConfigError, DataError
from kdcore.run_folder import RunDir
from kdcore.fold_runner import FoldOutput, FoldRunner, ModelSpec, merge_runs, parse_folds


def cohort():
    groups = [f"p{i // 2}" for i in range(24)]
    labels = ["a" if (i // 2) % 2 else "b" for i in range(24)]
    return groups, labels


def make_runner(path, calls, manifest=None):
    groups, labels = cohort()
    manifest = manifest or make_fold_manifest(groups, labels, 3, 0.25, seed=0)
    run = RunDir(path)
    run.path.mkdir(parents=True, exist_ok=True)
    manifest.save(run.path / "folds.json")

    def trainer(name):
        def train(ctx):
            calls.append((name, ctx.fold, sorted(ctx.dependencies)))
            # the patients a model of this fold trains on come from the one manifest
            assert set(ctx.split.train).isdisjoint(ctx.split.test)
            rows = [{"id": p, "patient": p, "fold": ctx.fold, "score": 0.5} for p in ctx.split.test]
            return FoldOutput(rows, ["id", "patient", "fold", "score"], {"train_patients": sorted(ctx.split.train)})
        return train

    specs = [ModelSpec("student", trainer("student"), requires=("teacher",)),
             ModelSpec("baseline", trainer("baseline")),
             ModelSpec("teacher", trainer("teacher"))]
    return FoldRunner(run, manifest, specs), manifest


def test_dependency_order_and_shared_patients(tmp_path):
    calls = []
    runner, manifest = make_runner(tmp_path, calls)
    runner.run_folds([0, 1, 2])
    assert [c[0] for c in calls[:3]] == ["teacher", "student", "baseline"]
    assert calls[1][2] == ["teacher"]
    import json
    for k in range(3):
        infos = [json.loads((runner.model_dir(m, k) / "done.json").read_text()) for m in ("teacher", "student", "baseline")]
        assert infos[0]["train_patients"] == infos[1]["train_patients"] == infos[2]["train_patients"]
    oof = runner.predictions("student")
    assert sorted(r["patient"] for r in oof) == sorted(set(cohort()[0]))


def test_completed_folds_are_skipped_on_resume(tmp_path):
    calls = []
    runner, _ = make_runner(tmp_path, calls)
    runner.run_folds([0])
    calls.clear()
    runner.run_folds([0, 1])
    assert {c[1] for c in calls} == {1}


def test_split_fold_jobs_merge(tmp_path):
    a, b = [], []
    runner_a, manifest = make_runner(tmp_path / "a", a)
    runner_b, _ = make_runner(tmp_path / "b", b, manifest)
    runner_a.run_folds([0, 1])
    runner_b.run_folds([2])
    copied = merge_runs(tmp_path / "a", [tmp_path / "b"])
    assert sorted(copied) == ["folds/fold_2/baseline", "folds/fold_2/student", "folds/fold_2/teacher"]
    assert runner_a.completed_folds("student") == [0, 1, 2]


def test_merging_runs_of_different_manifests_is_refused(tmp_path):
    runner_a, _ = make_runner(tmp_path / "a", [])
    groups, labels = cohort()
    make_runner(tmp_path / "b", [], make_fold_manifest(groups, labels, 3, 0.25, seed=9))
    with pytest.raises(DataError, match="differs"):
        merge_runs(tmp_path / "a", [tmp_path / "b"])


def test_unknown_dependency_and_cycles():
    noop = lambda ctx: None  # noqa: E731
    with pytest.raises(ConfigError, match="requires 'teacher'"):
        FoldRunner._ordered([ModelSpec("student", noop, ("teacher",))])
    with pytest.raises(ConfigError, match="cycle"):
        FoldRunner._ordered([ModelSpec("a", noop, ("b",)), ModelSpec("b", noop, ("a",))])


def test_parse_folds():
    assert parse_folds(None, 3) == [0, 1, 2]
    assert parse_folds("2,0", 5) == [0, 2] and parse_folds("1-3", 5) == [1, 2, 3]
    with pytest.raises(ConfigError, match="outside 0..2"):
        parse_folds("3", 3)
