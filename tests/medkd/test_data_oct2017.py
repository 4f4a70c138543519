"""OCT2017 (Kermany) loader: patients from file names, official split, train/test overlap, planted defects."""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from kdcore.errors import DataError
from medkd.data import load_oct2017, load_oct_dataset, official_split, train_test_overlap


def tiny_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(str(path).encode()))
    cv2.imwrite(str(path), rng.integers(0, 255, (16, 24), dtype=np.uint8))


def make_tree(root: Path, files: list[str]) -> Path:
    for rel in files:
        tiny_image(root / rel)
    return root


OFFICIAL = [
    "train/CNV/CNV-100-1.jpeg", "train/CNV/CNV-100-2.jpeg", "train/DME/DME-200-1.jpeg",
    "train/DRUSEN/DRUSEN-300-1.jpeg", "train/NORMAL/NORMAL-400-1.jpeg", "train/NORMAL/NORMAL-500-3.jpeg",
    # patient 300 has DRUSEN images in train and a CNV image in test: one person, so the split leaks
    "test/CNV/CNV-300-7.jpeg", "test/DME/DME-600-1.jpeg", "test/DRUSEN/DRUSEN-700-1.jpeg",
    "test/NORMAL/NORMAL-800-1.jpeg",
]


def test_real_fixture_loads_as_one_split(shared_fixtures):
    root = shared_fixtures / "oct2017-real"
    ds = load_oct_dataset(root, "oct2017")
    files = sorted(root.glob("*/*.jpeg"))
    assert len(ds) == len(files) == 32
    assert ds.classes == ["CNV", "DME", "DRUSEN", "NORMAL"]
    assert ds.class_counts() == {"CNV": 8, "DME": 8, "DRUSEN": 8, "NORMAL": 8}
    # patient numbers read independently from the names: <CLASS>-<patient>-<n>.jpeg
    assert set(ds.patients) == {f.name.split("-")[1] for f in files}
    assert all(r.official_split is None and r.path.is_file() for r in ds.records)
    assert any("one split" in n for n in ds.notes)
    with pytest.raises(DataError, match="no official split"):
        official_split(ds)


def test_patient_key_ignores_the_class_and_overlap_is_found(tmp_path):
    ds = load_oct2017(make_tree(tmp_path, OFFICIAL))
    assert {r.patient for r in ds.records if r.image_id.startswith("train/CNV")} == {"100"}
    assert train_test_overlap(ds) == {"300"}
    assert any("1 patient(s) appear in both" in n for n in ds.notes)
    assert {r.official_split for r in ds.records} == {"train", "test"}


def test_official_split_drops_overlapping_patients_from_training_only(tmp_path):
    ds = load_oct2017(make_tree(tmp_path, OFFICIAL))
    train, test, dropped = official_split(ds)
    assert dropped == {"300"}
    assert sorted(r.image_id for r in test) == sorted(f for f in OFFICIAL if f.startswith("test/"))
    assert "300" not in {r.patient for r in train}
    assert len(train) == 5  # six training files minus the one of patient 300
    kept, _, none = official_split(ds, drop_overlap=False)
    assert none == set() and len(kept) == 6


def test_val_folder_counts_as_training(tmp_path):
    ds = load_oct2017(make_tree(tmp_path, OFFICIAL + ["val/NORMAL/NORMAL-800-9.jpeg"]))
    assert train_test_overlap(ds) == {"300", "800"}
    train, _, _ = official_split(ds)
    assert all(r.official_split in ("train", "val") for r in train)


def test_bad_file_name_is_named(tmp_path):
    make_tree(tmp_path, OFFICIAL + ["train/CNV/scan_17.jpeg"])
    with pytest.raises(DataError, match=r"train/CNV/scan_17\.jpeg: file name is not <CLASS>-<patient>-<n>\.jpeg"):
        load_oct2017(tmp_path)


def test_file_name_class_must_match_its_folder(tmp_path):
    make_tree(tmp_path, OFFICIAL + ["train/CNV/DME-900-1.jpeg"])
    with pytest.raises(DataError, match=r"DME-900-1\.jpeg: file name says 'DME' but it is in class folder 'CNV'"):
        load_oct2017(tmp_path)


def test_empty_class_folder_raises(tmp_path):
    make_tree(tmp_path, OFFICIAL)
    (tmp_path / "test" / "EXTRA").mkdir()
    with pytest.raises(DataError, match=r"test/EXTRA: class folder holds no images"):
        load_oct2017(tmp_path)


def test_unknown_class_folder_with_explicit_classes(tmp_path):
    make_tree(tmp_path, OFFICIAL)
    with pytest.raises(DataError, match=r"class folder 'DME' is not one of \['CNV', 'DRUSEN', 'NORMAL'\]"):
        load_oct2017(tmp_path, classes=["CNV", "DRUSEN", "NORMAL"])
    ordered = load_oct2017(tmp_path, classes=["normal", "dme", "drusen", "cnv"])
    assert ordered.classes == ["normal", "dme", "drusen", "cnv"]
    assert ordered.targets[ordered.labels.index("cnv")] == 3


def test_hidden_and_non_image_files_are_ignored(tmp_path):
    make_tree(tmp_path, OFFICIAL)
    (tmp_path / "train" / "CNV" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "train" / "CNV" / "Thumbs.db").write_bytes(b"\0")
    (tmp_path / "__MACOSX").mkdir()
    ds = load_oct2017(tmp_path)
    assert len(ds) == len(OFFICIAL)
    assert any("not_an_image" in n and "Thumbs.db" in n for n in ds.notes)


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_oct_dataset(tmp_path / "nope", "oct2017")
