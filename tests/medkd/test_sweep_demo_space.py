"""The demo sweep space shipped in pipelines/spaces is valid against the demo recipe (no training)."""

from kdcore.config import read_yaml
from kdcore.sweep import check_space, load_space
from medkd.config import OCTRecipe
from medkd.sweep import OBJECTIVES, adapter
from tests.medkd.tiny import REPO


def test_demo_space_is_valid_for_the_demo_recipe():
    space = load_space(REPO / "pipelines" / "spaces" / "kd_oct_demo.yaml", OBJECTIVES)
    check_space(space, OCTRecipe, read_yaml(REPO / "pipelines" / "kd_oct_demo.yaml"), adapter().trial_sections)
    assert {p.key for p in space.params} >= {"student.kd_loss", "student.temperature"}
