"""Manifest loader (path,label,patient[,eye][,visit][,split]) and the format dispatcher."""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from kdcore.errors import ConfigError, DataError
from medkd.data import load_manifest, load_oct_dataset, official_split


def tiny_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(str(path).encode()))
    cv2.imwrite(str(path), rng.integers(0, 255, (16, 24), dtype=np.uint8))


def make_manifest(root: Path, text: str, files=("scans/a.png", "scans/b.png", "scans/c.png")) -> Path:
    for rel in files:
        tiny_image(root / rel)
    (root / "manifest.csv").write_text(text)
    return root


GOOD = """path,label,patient,eye,visit,split,site
scans/a.png,AMD,p1,OD,2020-01,train,x
scans/b.png,NORMAL,p2,OS,,train,y
scans/c.png,AMD,p1,OS,2021-03,test,x
"""


def test_loads_rows_with_optional_columns(tmp_path):
    ds = load_manifest(make_manifest(tmp_path, GOOD))
    assert ds.classes == ["AMD", "NORMAL"]  # sorted labels when classes is not given
    first = ds.records[0]
    assert (first.image_id, first.label, first.patient, first.eye, first.visit, first.official_split) == (
        "scans/a.png", "AMD", "p1", "OD", "2020-01", "train")
    assert ds.records[1].visit is None
    assert any("extra column(s) ignored: site" in n for n in ds.notes)
    assert any("1 patient(s) appear in both" in n for n in ds.notes)
    train, test, dropped = official_split(ds)
    assert dropped == {"p1"} and [r.image_id for r in train] == ["scans/b.png"] and len(test) == 1


def test_manifest_file_or_folder_and_class_order(tmp_path):
    root = make_manifest(tmp_path, GOOD)
    by_file = load_oct_dataset(root / "manifest.csv", "manifest", classes=["normal", "amd"])
    by_folder = load_oct_dataset(root, "manifest", classes=["normal", "amd"])
    assert by_file.records == by_folder.records
    assert by_file.classes == ["normal", "amd"] and by_file.targets == [1, 0, 1]


def test_missing_columns_are_named(tmp_path):
    root = make_manifest(tmp_path, "path,label\nscans/a.png,AMD\n")
    with pytest.raises(DataError, match=r"manifest\.csv:1: missing column\(s\) 'patient'"):
        load_manifest(root)


def test_empty_values_name_line_and_column(tmp_path):
    root = make_manifest(tmp_path, "path,label,patient\nscans/a.png,AMD,p1\nscans/b.png,,p2\n")
    with pytest.raises(DataError, match=r"manifest\.csv:3: empty 'label'"):
        load_manifest(root)


@pytest.mark.parametrize("path, why", [
    ("/etc/passwd", "absolute path"),
    ("C:\\\\scans\\\\a.png", "absolute path"),
    ("scans/../../secret.png", r"escapes the data root"),
])
def test_paths_must_stay_inside_the_root(tmp_path, path, why):
    root = make_manifest(tmp_path, f"path,label,patient\nscans/a.png,AMD,p1\n{path},AMD,p2\n")
    with pytest.raises(DataError, match=rf"manifest\.csv:3: path: .*{why}"):
        load_manifest(root)


def test_duplicated_rows_name_both_lines(tmp_path):
    root = make_manifest(tmp_path, "path,label,patient\nscans/a.png,AMD,p1\nscans/b.png,AMD,p2\nscans/a.png,AMD,p1\n")
    with pytest.raises(DataError, match=r"manifest\.csv:4: 'scans/a\.png' is already listed on line 2"):
        load_manifest(root)


def test_missing_file_is_named(tmp_path):
    root = make_manifest(tmp_path, "path,label,patient\nscans/a.png,AMD,p1\nscans/zzz.png,AMD,p2\n")
    with pytest.raises(DataError, match=r"manifest\.csv:3: path 'scans/zzz\.png': no such image"):
        load_manifest(root)


def test_case_mismatch_and_backslashes_are_matched(tmp_path):
    root = make_manifest(tmp_path, "path,label,patient\nSCANS\\A.PNG,AMD,p1\nscans/b.png,NORMAL,p2\n")
    ds = load_manifest(root)
    assert ds.records[0].image_id == "scans/a.png"
    assert any("case_mismatch" in n and "manifest.csv:2" in n for n in ds.notes)


def test_unknown_label_and_bad_split(tmp_path):
    root = make_manifest(tmp_path, "path,label,patient,split\nscans/a.png,AMD,p1,train\nscans/b.png,GA,p2,dev\n")
    with pytest.raises(DataError) as err:
        load_manifest(root, classes=["AMD", "NORMAL"])
    assert "manifest.csv:3: label 'GA' is not one of ['AMD', 'NORMAL']" in str(err.value)
    assert "no image of class 'NORMAL'" in str(err.value)
    root2 = make_manifest(tmp_path / "two", "path,label,patient,split\nscans/a.png,AMD,p1,dev\n")
    with pytest.raises(DataError, match=r"manifest\.csv:2: split 'dev' is not one of"):
        load_manifest(root2)


def test_too_many_fields_on_a_line(tmp_path):
    root = make_manifest(tmp_path, "path,label,patient\nscans/a.png,AMD,p1,extra\n")
    with pytest.raises(DataError, match=r"manifest\.csv:2: 4 fields but the header has 3"):
        load_manifest(root)


def test_dispatcher_rejects_unknown_format_and_subset(tmp_path):
    root = make_manifest(tmp_path, GOOD)
    with pytest.raises(ConfigError, match="format"):
        load_oct_dataset(root, "kermany")
    with pytest.raises(ConfigError, match="NEH format only"):
        load_oct_dataset(root, "manifest", subset="worst_case")
    assert len(load_oct_dataset(root, "manifest", subset="all")) == 3


def test_without_drops_images_and_keeps_a_note(tmp_path):
    ds = load_manifest(make_manifest(tmp_path, GOOD))
    smaller = ds.without(["scans/b.png"], reason="unreadable")
    assert [r.image_id for r in smaller.records] == ["scans/a.png", "scans/c.png"]
    assert "1 image(s) unreadable: scans/b.png" in smaller.notes[-1] and len(ds) == 3
    with pytest.raises(DataError, match="not in the dataset"):
        ds.without(["scans/zzz.png"])
