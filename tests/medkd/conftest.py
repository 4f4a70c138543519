"""Shared helpers of the medkd tests: a finished run folder as ``medkd run`` writes it, for export, predictor and
volume tests."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

from kdcore.checkpoint import save_weights
from kdcore.cv import make_fold_manifest
from kdcore.models import create_model
from kdcore.run_folder import RunDir

CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")


def make_oct_run(base: Path, size: int = 32, data_root: Path | None = None, scores=(0.5, 0.3),
                 monitor: str = "loss", report: bool = True, train_steps: int = 0) -> Path:
    """A run folder as ``medkd run`` writes it, with two folds of a tiny student: untrained, or fitted for
    ``train_steps`` Adam steps on all the images (so that its outputs have margins, as a trained model's do)."""
    run, root = base / "run", data_root or base / "data"
    rng = np.random.default_rng(0)
    items = []
    for label in CLASSES:
        for patient in range(3):
            for n in range(2):
                relative = f"{label}/{label}-{patient}-{n}.png"
                if data_root is None:
                    (root / label).mkdir(parents=True, exist_ok=True)
                    scan = rng.integers(0, 256, size=(60 + 10 * patient, 90), dtype=np.uint8)
                    cv2.imwrite(str(root / relative), scan)
                items.append({"id": relative, "path": relative, "label": label, "patient": f"{label}{patient}"})
    run.mkdir(parents=True)
    config = {"name": "tiny-oct", "data": {"root": str(root), "format": "oct2017"}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    environment = {"git": {"commit": "0123456789abcdef0123", "dirty": False}, "seed": 1}
    (run / "environment.json").write_text(json.dumps(environment))
    (run / "dataset.json").write_text(json.dumps({"format": "oct2017", "classes": list(CLASSES), "items": items}))
    manifest = make_fold_manifest([i["patient"] for i in items], [i["label"] for i in items], 2, 0.5, seed=0)
    manifest.save(run / "folds.json")
    torch.manual_seed(0)
    for fold, score in enumerate(scores):
        model = create_model("test_efficientnet", len(CLASSES), in_chans=1)
        if train_steps:
            _fit(model, root, items, size, train_steps)
        meta = {"arch": "test_efficientnet", "role": "student", "fold": fold, "manifest": manifest.sha,
                "task": "classification", "num_outputs": len(CLASSES), "in_chans": 1, "classes": list(CLASSES),
                "recipe": "tiny-oct", "input": {"size": size, "channels": 1, "mean": [0.449], "std": [0.226],
                                                "resize": "letterbox", "pad_value": 0, "colour": "gray"},
                "kept": "best", "best_epoch": 2, "best_score": score, "epochs_run": 3, "monitor": monitor}
        folders = RunDir(run)
        folders.model_dir("student", fold).mkdir(parents=True)
        save_weights(folders.weights("student", fold), model.state_dict(), meta)
        folders.finish_model("student", fold, {"model": "student", "fold": fold, "manifest": manifest.sha})
    if report:
        summary = {"accuracy": {"mean": 0.875, "std": 0.02, "ci95": [0.81, 0.93]},
                   "ece": {"mean": 0.061, "std": 0.01, "ci95": [0.04, 0.08]}}
        (run / "report.json").write_text(json.dumps({"models": {"student": {"summary": summary}}}))
    return run


def _fit(model: torch.nn.Module, root: Path, items: list[dict], size: int, steps: int) -> None:
    from medkd.preprocess import preprocess

    images = torch.stack([torch.from_numpy(preprocess(cv2.imread(str(root / i["path"]), cv2.IMREAD_GRAYSCALE), size,
                                                      [0.449], [0.226])).reshape(1, size, size) for i in items])
    targets = torch.tensor([list(CLASSES).index(i["label"]) for i in items])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), targets).backward()
        optimizer.step()
    model.eval()
