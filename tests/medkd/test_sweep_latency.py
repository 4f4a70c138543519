"""Student search under a latency budget: candidates measured before the sweep, those over budget left out with
their latency shown; --multi-objective records validation score and latency and a Pareto front."""

import json

import optuna
import yaml

import kdcore.sweep.search as search
from medkd.cli import main
from tests.medkd.sweep_tiny import write_sweep_inputs

CANDIDATES = ["test_efficientnet", "test_resnet"]
SPACE = {"objective": "accuracy", "params": {"student.model": {"choices": CANDIDATES},
                                             "student.temperature": {"low": 1.0, "high": 8.0}}}


def test_no_candidate_within_budget_stops_before_training_and_names_each_latency(tmp_path, capsys):
    recipe, space = write_sweep_inputs(tmp_path, space=SPACE)
    out = tmp_path / "sweep"
    assert main(["sweep", str(recipe), "--space", str(space), "--trials", "2", "--folds", "0", "--out", str(out),
                 "--latency-budget-ms", "0.000001", "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    error = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "no candidate student fits" in error[0]
    assert captured.err.strip().splitlines()[-1] == error[0]
    for name in CANDIDATES:
        assert f"{name} " in error[0] and f"latency {name}: " in captured.out
    assert not out.exists(), "nothing trained, nothing left behind"


def test_multi_objective_search_leaves_out_students_over_budget(tmp_path, monkeypatch, capsys):
    measured = {"test_efficientnet": 1.5, "test_resnet": 40.0}
    calls = []

    def fake_latency(adapter, recipe_for, models, data, device, runs):
        calls.append((list(models), device))
        return {m: measured[m] for m in models}

    monkeypatch.setattr(search, "measure_student_latency", fake_latency)
    recipe, space = write_sweep_inputs(tmp_path, space=SPACE)
    out = tmp_path / "sweep"
    assert main(["sweep", str(recipe), "--space", str(space), "--trials", "2", "--folds", "0", "--out", str(out),
                 "--latency-budget-ms", "10", "--multi-objective", "--device", "cpu", "--seed", "0"]) == 0
    assert calls == [(CANDIDATES, "cpu")]
    printed = capsys.readouterr().out
    assert "latency test_resnet: 40.00 ms" in printed and "> budget 10 ms: left out" in printed
    summary = json.loads(printed[printed.index("{"):printed.rindex("}") + 1])
    assert summary["left_out_over_budget_ms"] == {"test_resnet": 40.0}
    assert summary["pareto_front"]
    study = optuna.load_study(study_name="kd_oct_demo-sweep", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.directions) == 2
    for trial in study.trials:
        assert trial.params["student.model"] == "test_efficientnet"
        assert trial.values[1] == 1.5 and trial.user_attrs["latency_ms"] == 1.5
    assert "Validation score against latency" in (out / "sweep.html").read_text()
    assert yaml.safe_load((out / "recommended.yaml").read_text())["student"]["model"] == "test_efficientnet"
