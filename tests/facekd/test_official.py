"""300W's official protocol: train on the training split, report common and challenging as subsets."""

import json
import shutil

from facekd.cli import main
from facekd.synth import write_synthetic_faces
from tests.facekd.tiny import write_tiny_face_recipe

LAYOUT = {"lfpw/trainset": 4, "helen/trainset": 4, "afw": 2, "lfpw/testset": 2, "helen/testset": 2, "ibug": 2}


def w300_tree(tmp_path):
    source = tmp_path / "synthetic"
    write_synthetic_faces(source, sum(LAYOUT.values()), seed=5, image_size=(128, 128))
    faces = sorted(source.glob("*.png"))
    root = tmp_path / "300W"
    for folder, count in LAYOUT.items():
        (root / folder).mkdir(parents=True)
        for _ in range(count):
            face = faces.pop()
            shutil.copy(face, root / folder / face.name)
            shutil.copy(face.with_suffix(".pts"), root / folder / face.with_suffix(".pts").name)
    return root


def test_official_300w_split(tmp_path):
    root = w300_tree(tmp_path)
    recipe = write_tiny_face_recipe(tmp_path, data={"format": "300w", "evaluation": "official"},
                                    cv={"val_fraction": 0.25})
    assert main(["split", str(recipe), "--data-root", str(root), "--out", str(tmp_path / "folds.json")]) == 0
    manifest = json.loads((tmp_path / "folds.json").read_text())
    fold = manifest["folds"][0]
    assert manifest["n_folds"] == 1 and len(fold["test"]) == 6  # common (4) + challenging (2)
    assert len(fold["train"]) + len(fold["val"]) == 10 and fold["val"]
    assert all(s.startswith(("lfpw/testset", "helen/testset", "ibug")) for s in fold["test"])


def test_official_needs_a_dataset_with_splits(tmp_path, capsys):
    recipe = write_tiny_face_recipe(tmp_path, data={"evaluation": "official"})
    assert main(["split", str(recipe), "--data-root", str(tmp_path)]) == 2
    assert "data.evaluation" in capsys.readouterr().err
