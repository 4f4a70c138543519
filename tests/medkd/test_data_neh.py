"""NEH loader: real layout rules (patient keys, worst-case subset, case-insensitive paths) and planted defects."""

from __future__ import annotations

import csv
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from kdcore.errors import ConfigError, DataError
from medkd.data import load_neh, load_oct_dataset
from medkd.synth import write_synthetic_oct

HEADER = ["Patient ID", "Class", "Label", "Directory", "Eye"]


def tiny_image(path: Path) -> None:
    """A small distinct image (seeded by its path) so no two files are identical."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(str(path).encode()))
    cv2.imwrite(str(path), rng.integers(0, 255, (16, 24), dtype=np.uint8))


def make_neh(root: Path, rows: list[list[str]], files: list[str] | None = None, header=HEADER) -> Path:
    """Write ``data_information.csv`` with ``rows`` and an image for every Directory (or only ``files``)."""
    root.mkdir(parents=True, exist_ok=True)
    for rel in files if files is not None else [r[3] for r in rows]:
        tiny_image(root / rel)
    with (root / "data_information.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return root


BASIC = [
    ["1", "NORMAL", "NORMAL", "NORMAL/1/OD/001_Normal.jpg", "OD"],
    ["1", "NORMAL", "NORMAL", "NORMAL/1/OS/001_Normal.jpg", "OS"],
    ["1", "DRUSEN", "NORMAL", "DRUSEN/1/OD/001_Normal.jpg", "OD"],
    ["1", "DRUSEN", "DRUSEN", "DRUSEN/1/OD/002_Drusen.jpg", "OD"],
    ["2", "CNV", "DRUSEN", "CNV/2/OS/001_Drusen.jpg", "OS"],
    ["2", "CNV", "CNV", "CNV/2/OS/002_CNV.jpg", "OS"],
    ["1", "CNV", "CNV", "CNV/1/OD/001_CNV.jpg", "OD"],
]


def test_patient_keys_include_the_class_folder(tmp_path):
    ds = load_neh(make_neh(tmp_path, BASIC), subset="all")
    # case number 1 exists in all three class folders: three different patients
    assert sorted(set(ds.patients)) == ["CNV/1", "CNV/2", "DRUSEN/1", "NORMAL/1"]
    assert ds.classes == ["NORMAL", "DRUSEN", "CNV"]
    assert any("restart in every class folder" in n for n in ds.notes)
    record = next(r for r in ds.records if r.image_id == "DRUSEN/1/OD/001_Normal.jpg")
    assert (record.label, record.patient_class, record.eye) == ("NORMAL", "DRUSEN", "OD")
    assert record.path == (tmp_path / "DRUSEN/1/OD/001_Normal.jpg").absolute() and record.path.is_absolute()


def test_worst_case_keeps_images_whose_label_is_the_patient_class(tmp_path):
    root = make_neh(tmp_path, BASIC)
    worst = load_oct_dataset(root, "neh")  # the default subset is KD-OCT's
    expected = [r[3] for r in BASIC if r[1] == r[2]]
    assert sorted(r.image_id for r in worst.records) == sorted(expected)
    assert all(r.label == r.patient_class for r in worst.records)
    assert len(load_oct_dataset(root, "neh", subset="all")) == len(BASIC)


def test_synthetic_dataset_counts_match_its_csv(tmp_path):
    summary = write_synthetic_oct(tmp_path / "neh", 6, seed=3, image_size=(96, 64), scans_per_eye=(2, 4))
    with summary.csv_path.open() as f:
        rows = list(csv.DictReader(f))
    worst = load_neh(summary.root)
    every = load_neh(summary.root, subset="all")
    assert len(every) == len(rows)
    assert len(worst) == sum(r["Label"] == r["Class"] for r in rows)
    assert len(set(every.patients)) == 6  # 2 patients per class, case numbers 1 and 2 in every class


def test_kd_oct_layout_with_the_csv_beside_the_image_folder(tmp_path):
    make_neh(tmp_path / "NEH_UT_2021RetinalOCTDataset", BASIC)
    (tmp_path / "NEH_UT_2021RetinalOCTDataset" / "data_information.csv").rename(tmp_path / "data_information.csv")
    from_parent = load_neh(tmp_path, subset="all")
    from_images = load_neh(tmp_path / "NEH_UT_2021RetinalOCTDataset", subset="all")
    assert [r.image_id for r in from_parent.records] == [r.image_id for r in from_images.records]
    assert from_parent.root == from_images.root == (tmp_path / "NEH_UT_2021RetinalOCTDataset").absolute()


def test_case_mismatched_paths_are_matched_and_noted(tmp_path):
    rows = [list(r) for r in BASIC]
    rows[0][3] = "normal/1/od/001_NOrmal.JPG"  # the CSV spells it differently from the disk
    root = make_neh(tmp_path, rows, files=[r[3] for r in BASIC])
    ds = load_neh(root, subset="all")
    assert "NORMAL/1/OD/001_Normal.jpg" in [r.image_id for r in ds.records]
    notes = [n for n in ds.notes if "case_mismatch" in n]
    assert len(notes) == 1 and "normal/1/od/001_NOrmal.JPG" in notes[0] and "data_information.csv:2" in notes[0]


def test_missing_columns_are_named(tmp_path):
    root = make_neh(tmp_path, [r[:4] for r in BASIC], header=HEADER[:4])
    with pytest.raises(DataError, match=r"data_information\.csv:1: missing column\(s\) 'Eye'"):
        load_neh(root)


def test_unknown_class_names_the_line(tmp_path):
    rows = [list(r) for r in BASIC] + [["3", "CNV", "GA", "CNV/3/OD/001_GA.jpg", "OD"]]
    with pytest.raises(DataError, match=r"data_information\.csv:9: Label 'GA' is not one of the classes"):
        load_neh(make_neh(tmp_path, rows))


def test_row_without_file_names_the_line(tmp_path):
    root = make_neh(tmp_path, BASIC, files=[r[3] for r in BASIC[1:]])
    with pytest.raises(DataError, match=r"information\.csv:2: Directory 'NORMAL/1/OD/001_Normal.jpg': no such file"):
        load_neh(root)


def test_identical_duplicate_rows_are_dropped_with_a_note(tmp_path):
    root = make_neh(tmp_path, BASIC + [BASIC[3]])
    ds = load_neh(root, subset="all")
    assert len(ds) == len(BASIC)
    assert any("duplicate_row" in n and "data_information.csv:9" in n and "line 5" in n for n in ds.notes)


def test_conflicting_duplicate_rows_raise(tmp_path):
    conflict = ["1", "DRUSEN", "NORMAL", "DRUSEN/1/OD/002_Drusen.jpg", "OD"]
    with pytest.raises(DataError, match=r"information\.csv:9: 'DRUSEN/1/OD/002_Drusen.jpg' is also listed on line 5"):
        load_neh(make_neh(tmp_path, BASIC + [conflict]))


def test_class_column_must_match_the_class_folder(tmp_path):
    rows = [list(r) for r in BASIC]
    rows[6][1] = "DRUSEN"  # CNV/1/OD/001_CNV.jpg said to belong to a DRUSEN patient
    rows[6][2] = "DRUSEN"
    with pytest.raises(DataError, match=r"csv:8: .*class folder 'CNV' but Class says 'DRUSEN'"):
        load_neh(make_neh(tmp_path, rows), subset="all")


def test_file_name_label_must_match_the_label_column(tmp_path):
    rows = [list(r) for r in BASIC]
    rows[3][2] = "CNV"
    with pytest.raises(DataError, match=r"csv:5: file name of 'DRUSEN/1/OD/002_Drusen.jpg' says 'Drusen' but Label"):
        load_neh(make_neh(tmp_path, rows), subset="all")


def test_patient_id_must_match_the_case_folder(tmp_path):
    rows = [list(r) for r in BASIC]
    rows[5][0] = "7"
    with pytest.raises(DataError, match=r"csv:7: .*case folder '2' but Patient ID says '7'"):
        load_neh(make_neh(tmp_path, rows), subset="all")
    rows[5][0] = "002"  # zero-padded numbers are the same case
    assert "CNV/2" in load_neh(make_neh(tmp_path / "padded", rows), subset="all").patients


def test_empty_class_folder_raises(tmp_path):
    rows = [r for r in BASIC if r[1] != "DRUSEN"]
    root = make_neh(tmp_path, rows)
    (root / "DRUSEN").mkdir()
    with pytest.raises(DataError) as err:
        load_neh(root, subset="all")
    assert "DRUSEN: class folder holds no images" in str(err.value)
    assert "no row of class 'DRUSEN'" in str(err.value)


def test_files_without_rows_are_noted_not_fatal(tmp_path):
    root = make_neh(tmp_path, BASIC, files=[r[3] for r in BASIC] + ["CNV/2/OS/003_CNV.jpg"])
    ds = load_neh(root, subset="all")
    assert len(ds) == len(BASIC)
    assert any("file_without_row" in n and "003_CNV.jpg" in n for n in ds.notes)


def test_all_row_problems_are_listed_at_once(tmp_path):
    rows = [list(r) for r in BASIC]
    rows[0][2] = "AMD"
    rows[1][4] = "left"
    root = make_neh(tmp_path, rows, files=[r[3] for r in BASIC[:-1]])
    with pytest.raises(DataError) as err:
        load_neh(root, subset="all")
    message = str(err.value)
    assert "3 blocking problem(s)" in message
    assert "csv:2:" in message and "csv:3:" in message and "csv:8:" in message


def test_loader_does_not_decode_images(tmp_path):
    root = make_neh(tmp_path, BASIC)
    (root / BASIC[0][3]).write_bytes(b"")  # unreadable, but indexing does not open it: the audit reports it
    assert len(load_neh(root, subset="all")) == len(BASIC)


def test_bad_arguments(tmp_path):
    root = make_neh(tmp_path, BASIC)
    with pytest.raises(ConfigError, match="subset"):
        load_neh(root, subset="some")
    (tmp_path / "a" / "b").mkdir(parents=True)
    with pytest.raises(DataError, match="data_information.csv not found"):
        load_neh(tmp_path / "a" / "b")
    with pytest.raises(DataError, match="none of the 7 rows names a file"):
        load_neh(tmp_path / "NORMAL")  # a class folder given as the root
    with pytest.raises(DataError, match="does not exist"):
        load_oct_dataset(tmp_path / "nowhere", "neh")
