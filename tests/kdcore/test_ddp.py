"""Two CPU processes with the gloo backend (torchrun) give the metrics of one process."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.medkd.tiny import write_tiny_recipe

# LayerNorm models and plain CE: with BatchNorm, each rank would normalise its half-batch differently.
NO_BATCHNORM = {"teacher": {"model": "test_convnext", "loss": "ce", "class_weights": "none",
                            "train": {"swa": {"enabled": False}}},
                "student": {"model": "test_convnext"}}


def torchrun() -> str:
    found = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(found).exists():
        pytest.skip("torchrun is not installed")
    return found


def test_two_process_gloo_run_matches_single_process(tmp_path):
    recipe = write_tiny_recipe(tmp_path, **NO_BATCHNORM)
    env = {**os.environ, "CI": "1", "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "medkd.cli", "run", str(recipe), "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, env=env, timeout=240)
    assert single.returncode == 0, single.stderr[-3000:]
    double = subprocess.run([torchrun(), "--standalone", "--nproc_per_node=2", "-m", "medkd.cli", "run", str(recipe),
                             "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=240)
    assert double.returncode == 0, double.stdout[-2000:] + double.stderr[-3000:]
    assert "world size 2" in (tmp_path / "two" / "run.log").read_text()

    one = json.loads((tmp_path / "one" / "report.json").read_text())
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    for model in ("teacher", "student", "baseline"):
        for fold_one, fold_two in zip(one["models"][model]["folds"], two["models"][model]["folds"]):
            for metric in ("accuracy", "auc", "ece"):
                a, b = fold_one[metric], fold_two[metric]
                assert (a is None and b is None) or abs(a - b) < 0.02, (model, metric, a, b)
    # The gathered predictions themselves agree closely (same samples, same seeds, averaged gradients).
    import csv

    with open(tmp_path / "one" / "folds" / "fold_0" / "student" / "predictions.csv") as f:
        p1 = [float(r["prob_CNV"]) for r in csv.DictReader(f)]
    with open(tmp_path / "two" / "folds" / "fold_0" / "student" / "predictions.csv") as f:
        p2 = [float(r["prob_CNV"]) for r in csv.DictReader(f)]
    assert max(abs(a - b) for a, b in zip(p1, p2)) < 1e-3
