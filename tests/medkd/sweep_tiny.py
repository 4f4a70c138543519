"""Helpers for the sweep tests: a tiny recipe and space, a sweep worker as a subprocess (not a test module)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.medkd.tiny import write_tiny_recipe

SPACE = {"objective": "accuracy",
         "params": {"student.kd_loss": {"choices": ["kd", "dkd"]},
                    "student.temperature": {"low": 1.0, "high": 8.0, "log": True}}}


def write_sweep_inputs(folder: Path, student_epochs: int = 2, space: dict | None = None) -> tuple[Path, Path]:
    recipe = write_tiny_recipe(folder, student={"train": {"epochs": student_epochs}})
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(space or SPACE, sort_keys=False))
    return recipe, path


def sweep_command(recipe: Path, space: Path, out: Path, trials: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "medkd.cli", "sweep", str(recipe), "--space", str(space), "--trials", str(trials),
            "--folds", "0", "--out", str(out), *extra]


def start_worker(command: list[str]) -> subprocess.Popen:
    # Workers share the 2 cores: one thread each, or OpenMP spin-waiting slows both tenfold.
    env = {**os.environ, "CI": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
