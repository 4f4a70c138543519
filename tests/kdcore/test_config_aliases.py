"""--set on a recipe whose sections share a YAML anchor changes the named section only."""

from kdcore.config import apply_overrides, read_yaml


def test_set_on_an_anchored_section_leaves_its_alias_alone(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("tough: &teacher\n  train: {epochs: 5}\ntolerant: *teacher\n")
    data = read_yaml(recipe)
    changed = apply_overrides(data, [("tough.train.epochs", 9)])
    assert changed["tough"]["train"]["epochs"] == 9
    assert changed["tolerant"]["train"]["epochs"] == 5
    assert data["tough"]["train"]["epochs"] == 5, "the input is not modified"
