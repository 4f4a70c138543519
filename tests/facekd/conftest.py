"""Shared helpers of the facekd tests: a finished run folder as ``facekd run`` writes it, for export and predictor
tests."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

from facekd.pts_files import write_pts
from kdcore.checkpoint import save_weights
from kdcore.cv import make_fold_manifest
from kdcore.models import create_model
from kdcore.run_folder import RunDir

LFPW = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "faces-lfpw"
N_POINTS = 68


def _synthetic_faces(root: Path, n: int = 6) -> list[str]:
    """Noise images with a plausible 68-point layout, for machines without the real fixtures."""
    rng = np.random.default_rng(1)
    names = []
    for i in range(n):
        root.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / f"face_{i}.png"), rng.integers(0, 256, size=(120, 100, 3), dtype=np.uint8))
        write_pts(root / f"face_{i}.pts", rng.uniform(20, 90, size=(N_POINTS, 2)))
        names.append(f"face_{i}.png")
    return names


def make_face_run(base: Path, size: int = 32, data_root: Path | None = None, report: bool = True) -> Path:
    """A run folder as ``facekd run`` writes it, with two folds of an untrained tiny student."""
    run = base / "run"
    if data_root is None:
        if LFPW.is_dir():
            root, names = LFPW, sorted(p.name for p in LFPW.glob("*.png"))[:12]
        else:
            root, names = base / "data", _synthetic_faces(base / "data", n=12)  # as many as the real ones
    else:
        root, names = data_root, [f"face_{i}.png" for i in range(6)]
    items = [{"id": Path(n).stem, "path": n, "subject": Path(n).stem, "subset": "test", "image_index": None}
             for n in names]
    run.mkdir(parents=True)
    config = {"name": "tiny-face", "data": {"root": str(root), "format": "folder"}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "environment.json").write_text(json.dumps({"git": {"commit": "fedcba9876543210", "dirty": True}, "seed": 2}))
    (run / "dataset.json").write_text(json.dumps({"n_points": N_POINTS, "items": items}))
    manifest = make_fold_manifest([i["subject"] for i in items], None, 2, 0.5, seed=0, group_name="subject")
    manifest.save(run / "folds.json")
    torch.manual_seed(0)
    for fold, nme in enumerate((0.08, 0.11)):
        model = create_model("test_efficientnet", 2 * N_POINTS, in_chans=3)
        meta = {"arch": "test_efficientnet", "role": "student", "fold": fold, "manifest": manifest.sha,
                "task": "landmarks", "num_outputs": 2 * N_POINTS, "in_chans": 3, "n_points": N_POINTS,
                "scheme": "ibug68", "recipe": "tiny-face",
                "input": {"size": size, "channels": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                          "crop_margin": 0.25, "colour": "rgb"},
                "kept": "swa", "best_epoch": 1, "best_score": nme, "epochs_run": 2, "monitor": "nme"}
        folders = RunDir(run)
        folders.model_dir("student", fold).mkdir(parents=True)
        save_weights(folders.weights("student", fold), model.state_dict(), meta)
        folders.finish_model("student", fold, {"model": "student", "fold": fold, "manifest": manifest.sha})
    if report:
        summary = {"nme": {"mean": 0.0612, "std": 0.004, "ci95": [0.055, 0.068]},
                   "fr": {"mean": 0.031, "std": 0.01, "ci95": [0.01, 0.05]},
                   "auc": {"mean": 0.52, "std": 0.02, "ci95": [0.48, 0.56]}}
        (run / "report.json").write_text(json.dumps({"models": {"student": {"summary": summary}}}))
    return run
