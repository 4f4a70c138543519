"""SIGKILL a real run in the middle of training, resume it, and get exactly the uninterrupted results."""

import json
import os
import signal
import subprocess
import sys
import time

from tests.medkd.tiny import write_tiny_recipe

STUDENT_EPOCHS = 5


def start(recipe, out, resume=False):
    command = [sys.executable, "-m", "medkd.cli", "run", str(recipe), "--out", str(out)] + (["--resume"] if resume else [])
    # Two runs share the 2 cores: one thread each, or OpenMP spin-waiting slows both tenfold.
    env = {**os.environ, "CI": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def student_epochs_logged(out) -> int:
    log = out / "log.jsonl"
    if not log.exists():
        return 0
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return sum(1 for r in records if r.get("model") == "student" and r.get("fold") == 0 and r.get("split") == "train")


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    recipe = write_tiny_recipe(tmp_path, student={"train": {"epochs": STUDENT_EPOCHS}})

    reference = start(recipe, tmp_path / "reference")
    killed = start(recipe, tmp_path / "killed")
    deadline = time.time() + 240
    while student_epochs_logged(tmp_path / "killed") < 2:
        assert killed.poll() is None, killed.stdout.read().decode()[-3000:]
        assert time.time() < deadline, "the run never reached the student's second epoch"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert (tmp_path / "killed" / "folds" / "fold_0" / "student" / "last.pt").exists()
    assert not (tmp_path / "killed" / "report.json").exists()

    resumed = start(recipe, tmp_path / "killed", resume=True)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out.decode()[-3000:]
    out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, out.decode()[-3000:]

    for fold in (0, 1):
        for model in ("teacher", "student", "baseline"):
            relative = f"folds/fold_{fold}/{model}/predictions.csv"
            assert (tmp_path / "killed" / relative).read_text() == (tmp_path / "reference" / relative).read_text(), relative
    a = json.loads((tmp_path / "killed" / "report.json").read_text())
    b = json.loads((tmp_path / "reference" / "report.json").read_text())
    for model in ("teacher", "student", "baseline"):  # all but the measured latency profile
        for key in ("folds", "summary", "per_class", "confusion_matrix"):
            assert a["models"][model][key] == b["models"][model][key], (model, key)
    assert a["comparisons"] == b["comparisons"]
