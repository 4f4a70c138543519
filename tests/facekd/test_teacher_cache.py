"""End to end: a landmark student distilled from both teachers' cached outputs equals online distillation."""

import json

from facekd.cli import main
from tests.facekd.tiny import write_tiny_face_recipe

SETTINGS = ["--folds", "0", "--set", "baseline.enabled=false"]


def test_views_cache_of_both_teachers_gives_the_predictions_of_online_kd(tmp_path):
    recipe = write_tiny_face_recipe(tmp_path)
    assert main(["run", str(recipe), "--out", str(tmp_path / "online"), *SETTINGS]) == 0
    cached_run = tmp_path / "cached"
    assert main(["run", str(recipe), "--out", str(cached_run), *SETTINGS, "--set", "student.teacher_cache=views"]) == 0
    student = "folds/fold_0/student/predictions.csv"
    assert (cached_run / student).read_text() == (tmp_path / "online" / student).read_text()
    meta = json.loads((cached_run / "folds" / "fold_0" / "teacher_cache" / "views" / "cache.json").read_text())
    assert meta["complete"] and set(meta["outputs"]) == {"tough", "tolerant"}
    assert set(meta["identity"]["teacher_sha256"]) == {"tough", "tolerant"}
