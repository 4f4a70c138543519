import json
import os

import pytest
import torch

from kdcore.atomic import atomic_open, atomic_write_json
from kdcore.errors import ConfigError, KDError
from kdcore.run_folder import RunDir, environment_info
from kdcore.seeding import rng_state, seed_everything, set_rng_state


class Cfg:
    def __init__(self, **kw):
        self.kw = kw

    def model_dump(self, mode="json"):
        return dict(self.kw)


def test_run_dir_records_config_environment_and_streams(tmp_path):
    run = RunDir.create(tmp_path / "run", Cfg(name="demo", seed=3), seed=3, comparable={"name": "demo"})
    env = json.loads((run.path / "environment.json").read_text())
    assert env["seed"] == 3 and env["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    for package in ("torch", "timm", "monai", "albumentations", "numpy"):
        assert env["packages"][package], package
    run.log_event({"model": "teacher", "fold": 0, "epoch": 1, "split": "train", "loss": 0.5, "note": "x"})
    lines = (run.path / "log.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["loss"] == 0.5
    csv_lines = (run.path / "metrics.csv").read_text().splitlines()
    assert csv_lines[0] == "time,model,fold,epoch,split,name,value" and csv_lines[1].endswith("teacher,0,1,train,loss,0.5")


def test_reusing_a_run_dir_with_another_recipe_is_refused(tmp_path):
    RunDir.create(tmp_path, Cfg(name="a", data={"x": 1}), 0, comparable={"data": {"x": 1}})
    RunDir.create(tmp_path, Cfg(name="a", data={"x": 1}), 0, comparable={"data": {"x": 1}})  # same: fine
    with pytest.raises(ConfigError, match="differs in: data"):
        RunDir.create(tmp_path, Cfg(name="a", data={"x": 2}), 0, comparable={"data": {"x": 2}})


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_dir_is_a_clear_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(KDError, match="not writable"):
        RunDir.create(locked / "run", Cfg(), 0)


def test_output_dir_under_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(KDError, match="not writable"):
        RunDir.create(tmp_path / "file" / "run", Cfg(), 0)


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write('{"v": 2, "half')
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_nan_in_report_is_refused(tmp_path):
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "r.json", {"auc": float("nan")})
    assert not (tmp_path / "r.json").exists()


def test_rng_state_round_trip_is_weights_only_safe(tmp_path):
    seed_everything(5)
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), __import__("numpy").random.rand(2).tolist(), __import__("random").random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), __import__("numpy").random.rand(2).tolist(), __import__("random").random())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


def test_environment_info_has_versions():
    info = environment_info(seed=1)
    assert info["python"] and info["cpu_count"] >= 1


def test_tensorboard_logger_writes_scalars(tmp_path):
    from kdcore.logs import TensorBoardLogger

    board = TensorBoardLogger(tmp_path / "tb")
    board.scalars("student/fold0", {"loss": 0.5, "note": "text is skipped"}, step=1)
    board.close()
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    TensorBoardLogger(None).scalars("x", {"loss": 1.0}, 0)  # disabled: a no-op by request, not by accident


def test_progress_bars_are_quiet_under_ci(monkeypatch):
    from kdcore.logs import progress_enabled

    monkeypatch.setenv("CI", "1")
    assert not progress_enabled()


def test_resume_removes_the_temporaries_a_killed_write_left(tmp_path):
    from kdcore.run_folder import RunDir, release_run_folder

    config = {"name": "x", "seed": 0}
    RunDir.create(tmp_path / "run", config, 0, comparable=config)
    orphan = tmp_path / "run" / "folds" / "fold_0" / "teacher" / ".predictions.csv.abc123.tmp"
    orphan.parent.mkdir(parents=True)
    orphan.write_text("half")
    release_run_folder(tmp_path / "run")
    RunDir.create(tmp_path / "run", config, 0, comparable=config)
    release_run_folder(tmp_path / "run")
    assert not orphan.exists() and (tmp_path / "run" / "config.yaml").exists()


def test_changed_section_names_the_folders_to_delete_then_is_accepted(tmp_path):
    from kdcore.errors import ConfigError
    from kdcore.run_folder import RunDir, release_run_folder

    old, new = {"seed": 0, "student": {"t": 4}}, {"seed": 0, "student": {"t": 2}}
    affects = {"student": ["student"]}
    RunDir.create(tmp_path / "run", old, 0, comparable=old, affects=affects)
    release_run_folder(tmp_path / "run")
    (tmp_path / "run" / "folds" / "fold_0" / "student").mkdir(parents=True)
    (tmp_path / "run" / "folds" / "fold_0" / "student" / "done.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"another student section, which changes only the student model\(s\)\. "
                                          r"To keep the other models and retrain these: delete .*fold_0/student"):
        RunDir.create(tmp_path / "run", new, 0, comparable=new, affects=affects)
    release_run_folder(tmp_path / "run")
    (tmp_path / "run" / "folds" / "fold_0" / "student" / "done.json").unlink()
    RunDir.create(tmp_path / "run", new, 0, comparable=new, affects=affects)
    release_run_folder(tmp_path / "run")
    with pytest.raises(ConfigError, match="differs in: seed"):
        RunDir.create(tmp_path / "run", {**new, "seed": 1}, 1, comparable={**new, "seed": 1}, affects=affects)
