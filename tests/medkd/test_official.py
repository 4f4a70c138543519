"""OCT2017's official protocol: the test folder as the one test fold, overlapping patients kept out of training."""

import json

import cv2
import numpy as np

from medkd.cli import main
from tests.medkd.tiny import write_tiny_recipe

CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")


def oct2017_tree(root, train_patients=8, test_patients=3, overlap=2):
    rng = np.random.default_rng(0)
    for split, patients in (("train", range(100, 100 + train_patients)),
                            ("test", list(range(200, 200 + test_patients)) + list(range(100, 100 + overlap)))):
        for cls in CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for patient in patients:
                image = rng.integers(0, 255, (60, 90), dtype=np.uint8)
                cv2.imwrite(str(folder / f"{cls}-{patient}{CLASSES.index(cls)}-1.jpeg"), image)
    return root


def test_official_split_keeps_overlapping_patients_out_of_training(tmp_path, capsys):
    root = oct2017_tree(tmp_path / "OCT2017")
    recipe = write_tiny_recipe(tmp_path, data={"format": "oct2017", "evaluation": "official_test",
                                               "classes": list(CLASSES)}, cv={"val_fraction": 0.25})
    assert main(["split", str(recipe), "--data-root", str(root), "--out", str(tmp_path / "folds.json")]) == 0
    manifest = json.loads((tmp_path / "folds.json").read_text())
    assert manifest["n_folds"] == 1
    fold = manifest["folds"][0]
    test = set(fold["test"])
    assert not test & (set(fold["train"]) | set(fold["val"]))
    # patients 100x and 101x appear in both official folders: tested, never trained on
    overlapping = {f"{p}{i}" for p in (100, 101) for i in range(4)}
    assert overlapping <= test
    assert fold["class_counts"]["test"] == {c: 5 for c in CLASSES}


def test_official_split_is_refused_for_layouts_without_it(tmp_path):
    recipe = write_tiny_recipe(tmp_path, data={"format": "neh", "evaluation": "official_test"})
    assert main(["split", str(recipe), "--data-root", str(tmp_path)]) == 2
