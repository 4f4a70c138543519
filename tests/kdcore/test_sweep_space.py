"""A sweep space is checked against the recipe before anything is trained, and every refusal names the entry."""

import pytest
import yaml

from kdcore.errors import ConfigError
from kdcore.sweep import check_space, parse_space
from medkd.cli import main
from medkd.config import OCTRecipe
from medkd.sweep import OBJECTIVES
from tests.medkd.tiny import write_tiny_recipe

BASE = {"student": {"model": "test_efficientnet", "pretrained": False}, "teacher": {"model": "test_resnet",
                                                                                   "pretrained": False}}


def check(params, objective="accuracy"):
    space = parse_space({"objective": objective, "params": params}, "space.yaml", OBJECTIVES)
    check_space(space, OCTRecipe, BASE, trial_sections=("student", "baseline", "report", "runtime", "name"))
    return space


def test_a_valid_space_gives_optuna_distributions_of_the_right_kind():
    space = check({"student.kd_loss": {"choices": ["kd", "dkd", "nkd"]},
                   "student.temperature": {"low": 1.0, "high": 8.0, "log": True},
                   "student.train.epochs": {"low": 2, "high": 6, "step": 2}})
    import optuna

    trial = optuna.create_study().ask()
    values = {p.key: p.suggest(trial) for p in space.params}
    assert values["student.kd_loss"] in ("kd", "dkd", "nkd")
    assert isinstance(values["student.train.epochs"], int) and values["student.train.epochs"] in (2, 4, 6)
    assert isinstance(values["student.temperature"], float) and 1.0 <= values["student.temperature"] <= 8.0
    assert space.direction == "maximize"


@pytest.mark.parametrize("params, objective, expected", [
    ({"student.temprature": {"low": 1.0, "high": 8.0}}, "accuracy",
     "params.student.temprature: invalid recipe with student.temprature=1.0:\n  student.temprature: unknown key "
     "(did you mean 'temperature'?)"),
    ({"student.temperature": {"low": 0.0, "high": 8.0}}, "accuracy", "student.temperature: must be > 0, got 0.0"),
    ({"student.temperature": {"low": 8.0, "high": 1.0}}, "accuracy",
     "params.student.temperature: low (8.0) must be below high (1.0)"),
    ({"student.temperature": {"low": 0.0, "high": 8.0, "log": True}}, "accuracy", "a log range needs low > 0"),
    ({"student.alpha": {"low": 0.5, "high": 1.5}}, "accuracy", "student.alpha: must be <= 1, got 1.5"),
    ({"student.kd_loss": {"choices": ["kd", "nope"]}}, "accuracy", "unknown distillation loss 'nope'"),
    ({"student.kd_loss": {"choices": []}}, "accuracy", "choices must be a non-empty list"),
    ({"student.kd_loss": {"choices": ["kd"], "low": 1}}, "accuracy", "choices cannot be combined"),
    ({"student.temperature": {"low": 1.0}}, "accuracy", "a range needs both low and high"),
    ({"student.temperature": {"low": 1.0, "high": 2.0, "lo": 3}}, "accuracy", "unknown field(s) ['lo']"),
    ({"teacher.loss": {"choices": ["ce", "focal"]}}, "accuracy",
     "params.teacher.loss: changes the teachers or the folds"),
    ({"cv.folds": {"low": 2, "high": 4}}, "accuracy", "params.cv.folds: changes the teachers or the folds"),
    ({"student.temperature": {"low": 1.0, "high": 8.0}}, "nme", "objective: must be one of"),
])
def test_bad_entries_are_refused_naming_them(params, objective, expected):
    with pytest.raises(ConfigError) as info:
        check(params, objective)
    assert expected in str(info.value)


def test_cli_refuses_a_bad_space_in_one_line_before_making_the_sweep_folder(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"objective": "accuracy", "params": {"student.model": {"choices": [
        "test_efficientnet", "no_such_net"]}}}))
    out = tmp_path / "sweep"
    assert main(["sweep", str(recipe), "--space", str(space), "--trials", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no_such_net" in err
    assert not out.exists()


def test_cli_refuses_a_missing_space_and_a_bad_trial_count(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path)
    assert main(["sweep", str(recipe), "--space", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "s")]) == 2
    assert "none.yaml: sweep space file not found" in capsys.readouterr().err
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"objective": "accuracy", "params": {"student.alpha": {"low": 0.1, "high": 0.9}}}))
    assert main(["sweep", str(recipe), "--space", str(space), "--trials", "0", "--out", str(tmp_path / "s")]) == 2
    assert "--trials must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
