"""End to end: a KD-OCT student distilled from the fold's teacher-output cache equals online distillation."""

import json
import shutil

from medkd.cli import main
from tests.medkd.tiny import write_tiny_recipe

SETTINGS = ["--folds", "0", "--set", "baseline.enabled=false", "--set", "teacher.train.epochs=2"]


def test_views_cache_gives_the_predictions_of_online_kd_and_is_reused(tmp_path):
    recipe = write_tiny_recipe(tmp_path)
    assert main(["run", str(recipe), "--out", str(tmp_path / "online"), *SETTINGS]) == 0
    cached_run = tmp_path / "cached"
    args = ["run", str(recipe), "--out", str(cached_run), *SETTINGS, "--set", "student.teacher_cache=views"]
    assert main(args) == 0
    student = "folds/fold_0/student/predictions.csv"
    assert (cached_run / student).read_text() == (tmp_path / "online" / student).read_text()
    cache = cached_run / "folds" / "fold_0" / "teacher_cache" / "views"
    meta = json.loads((cache / "cache.json").read_text())
    assert meta["complete"] and meta["lossless"] and meta["identity"]["dtype"] == "float32"
    events = [json.loads(line) for line in (cached_run / "log.jsonl").read_text().splitlines()]
    assert [e["mode"] for e in events if e.get("split") == "teacher_cache"] == ["views"]

    # A rerun of the student (here: its fold folder removed, then --resume) reuses the warm cache.
    shutil.rmtree(cached_run / "folds" / "fold_0" / "student")
    assert main([*args, "--resume"]) == 0
    assert (cached_run / student).read_text() == (tmp_path / "online" / student).read_text()
    assert json.loads((cache / "cache.json").read_text())["build_seconds"] == meta["build_seconds"]
