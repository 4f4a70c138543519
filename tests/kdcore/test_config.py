import pytest

from kdcore.config import Field, Section, TrainConfig, load_recipe, parse_overrides
from kdcore.errors import ConfigError


class Student(Section):
    model: str = "efficientnet_b2"
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.3, ge=0, le=1)
    train: TrainConfig = TrainConfig()


class Recipe(Section):
    name: str = "demo"
    student: Student = Student()


def write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_defaults_and_values(tmp_path):
    recipe = load_recipe(Recipe, write(tmp_path, "student:\n  temperature: 2\n"))
    assert recipe.student.temperature == 2.0 and recipe.student.alpha == 0.3


def test_negative_temperature_names_key_path(tmp_path):
    with pytest.raises(ConfigError, match=r"student\.temperature: must be > 0, got -1"):
        load_recipe(Recipe, write(tmp_path, "student:\n  temperature: -1\n"))


def test_misspelled_key_names_key_path_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"student\.temprature: unknown key \(did you mean 'temperature'\?\)"):
        load_recipe(Recipe, write(tmp_path, "student:\n  temprature: 2\n"))


def test_wrong_type_and_nested_range_reported_together(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_recipe(Recipe, write(tmp_path, "student:\n  alpha: lots\n  train:\n    lr: -0.1\n"))
    message = str(info.value)
    assert "student.alpha:" in message and "'lots'" in message
    assert "student.train.lr: must be > 0, got -0.1" in message


def test_overrides_are_validated(tmp_path):
    path = write(tmp_path, "student:\n  temperature: 4\n")
    assert load_recipe(Recipe, path, ["student.temperature=2"]).student.temperature == 2.0
    with pytest.raises(ConfigError, match=r"student\.temperature: must be > 0, got -3"):
        load_recipe(Recipe, path, ["student.temperature=-3"])
    with pytest.raises(ConfigError, match=r"student\.nope: unknown key"):
        load_recipe(Recipe, path, ["student.nope=1"])
    with pytest.raises(ConfigError, match="KEY.PATH=VALUE"):
        parse_overrides(["student.temperature"])


def test_yaml_errors_name_file_and_line(tmp_path):
    with pytest.raises(ConfigError, match=r"recipe\.yaml:3: duplicated key 'temperature'"):
        load_recipe(Recipe, write(tmp_path, "student:\n  temperature: 1\n  temperature: 2\n"))
    with pytest.raises(ConfigError, match=r"recipe\.yaml:\d+: invalid YAML"):
        load_recipe(Recipe, write(tmp_path, "student: [\n"))
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(Recipe, tmp_path / "missing.yaml")


def test_cross_field_rule_names_section(tmp_path):
    with pytest.raises(ConfigError, match=r"student\.train: .*swa\.start_epoch must be < epochs"):
        load_recipe(Recipe, write(tmp_path, "student:\n  train:\n    epochs: 5\n    swa: {enabled: true, start_epoch: 9}\n"))
