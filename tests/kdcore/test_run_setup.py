"""A failed start leaves no run folder; a run with progress (a finished model, a checkpoint) is kept."""

import pytest

from kdcore.run_setup import undo_new_folder_on_error


def fail_inside(out, make_files):
    with pytest.raises(RuntimeError, match="boom"):
        with undo_new_folder_on_error(out):
            make_files(out)
            raise RuntimeError("boom")


def test_new_folder_without_progress_is_removed(tmp_path):
    def setup_only(out):
        (out / "folds" / "fold_0" / "teacher").mkdir(parents=True)
        (out / "config.yaml").write_text("seed: 0\n")
        (out / "folds" / "fold_0" / "teacher" / "metrics.csv").write_text("epoch\n0\n")

    fail_inside(tmp_path / "run", setup_only)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("progress", ["done.json", "last.pt"])
def test_new_folder_with_progress_is_kept_for_resume(tmp_path, progress):
    def trained_a_little(out):
        (out / "folds" / "fold_0" / "teacher").mkdir(parents=True)
        (out / "folds" / "fold_0" / "teacher" / progress).write_text("{}")

    fail_inside(tmp_path / "run", trained_a_little)
    assert (tmp_path / "run" / "folds" / "fold_0" / "teacher" / progress).exists()


def test_folder_that_held_a_run_before_is_never_touched(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("seed: 0\n")
    fail_inside(tmp_path / "run", lambda out: (out / "audit.json").write_text("{}"))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["audit.json", "config.yaml"]
