"""Dataset audit: planted defects are each reported with the file named; the integrity gate stops or excludes."""

from __future__ import annotations

import csv
import json
import shutil
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from kdcore.errors import ConfigError, DataError
from medkd.audit import audit_oct, integrity_gate
from medkd.data import load_neh
from medkd.synth import write_synthetic_oct


@pytest.fixture(scope="module")
def clean_neh(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("neh") / "clean"
    write_synthetic_oct(root, 6, seed=21, image_size=(160, 112), scans_per_eye=(3, 4))
    return root


@pytest.fixture
def neh(clean_neh, tmp_path) -> Path:
    """A private copy of the clean synthetic dataset to plant defects in."""
    return Path(shutil.copytree(clean_neh, tmp_path / "neh"))


def rows_of(root: Path) -> list[dict]:
    with (root / "data_information.csv").open() as f:
        return list(csv.DictReader(f))


def write_rows(root: Path, rows: list[dict]) -> None:
    with (root / "data_information.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def pick(rows, cls, label, case=None):
    return next(r for r in rows
                if r["Class"] == cls and r["Label"] == label and (case is None or r["Patient ID"] == case))


def problems(report, kind, severity=None):
    return [p for p in report.problems if p.kind == kind and (severity is None or p.severity == severity)]


def test_clean_synthetic_dataset_has_no_blocking_problem(clean_neh):
    report = audit_oct(clean_neh, "neh", n_folds=2)
    assert report.blocking == []
    rows = rows_of(clean_neh)
    assert report.n_images == len(rows)
    assert report.images_per_class == {c: sum(r["Label"] == c for r in rows) for c in ("NORMAL", "DRUSEN", "CNV")}
    assert report.patients_per_class == {"NORMAL": 2, "DRUSEN": 2, "CNV": 2}
    assert sum(sum(e.values()) for e in report.images_per_eye.values()) == len(rows)
    assert len(report.images_per_patient) == 6
    collision = problems(report, "patient_number_collision")
    assert len(collision) == 1 and collision[0].severity == "info"  # numbers 1 and 2 exist in every class
    assert integrity_gate(report, exclude=False) == []
    summary = json.loads(json.dumps(report.to_dict()))
    assert summary["problems_by_kind"] == {"patient_number_collision": 1}
    assert sum(p["images"] for p in summary["patients"]) == len(rows)


def test_unreadable_images_are_blocking_and_excludable(neh):
    rows = rows_of(neh)
    truncated, empty = neh / rows[0]["Directory"], neh / rows[5]["Directory"]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    empty.write_bytes(b"")
    report = audit_oct(neh, "neh")
    found = {p.image_id: p for p in problems(report, "unreadable_image", "blocking")}
    assert set(found) == {rows[0]["Directory"], rows[5]["Directory"]}
    assert "truncated JPEG" in found[rows[0]["Directory"]].detail and found[rows[0]["Directory"]].path == str(truncated)
    assert "0 bytes" in found[rows[5]["Directory"]].detail
    with pytest.raises(DataError) as err:
        integrity_gate(report, exclude=False)
    assert str(truncated) in str(err.value) and "2 blocking problem(s)" in str(err.value)
    excluded = integrity_gate(report, exclude=True)
    assert excluded == sorted([rows[0]["Directory"], rows[5]["Directory"]])
    remaining = load_neh(neh, subset="all").without(excluded)
    assert len(remaining) == len(rows) - 2


def test_duplicate_image_under_two_patients_is_leakage(neh):
    rows = rows_of(neh)
    source, target = pick(rows, "NORMAL", "NORMAL", "1"), pick(rows, "NORMAL", "NORMAL", "2")
    shutil.copyfile(neh / source["Directory"], neh / target["Directory"])
    report = audit_oct(neh, "neh", near_duplicates=False)
    [dup] = problems(report, "duplicate_image", "blocking")
    assert source["Directory"] in dup.detail and target["Directory"] in dup.detail
    assert "NORMAL/1" in dup.detail and "NORMAL/2" in dup.detail
    with pytest.raises(DataError, match="duplicate_image"):
        integrity_gate(report, exclude=True)  # leakage cannot be excluded image by image


def test_identical_image_with_two_labels_is_a_conflict(neh):
    rows = rows_of(neh)
    source, target = pick(rows, "NORMAL", "NORMAL", "1"), pick(rows, "CNV", "CNV")
    shutil.copyfile(neh / source["Directory"], neh / target["Directory"])
    report = audit_oct(neh, "neh", near_duplicates=False)
    [conflict] = problems(report, "label_conflict", "blocking")
    assert "different labels" in conflict.detail and target["Directory"] in conflict.detail


def test_near_duplicate_under_two_patients_is_found(neh):
    rows = rows_of(neh)
    source, target = pick(rows, "DRUSEN", "DRUSEN", "1"), pick(rows, "DRUSEN", "DRUSEN", "2")
    image = cv2.imread(str(neh / source["Directory"]))
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 55])  # re-encoded copy: new bytes
    (neh / target["Directory"]).write_bytes(encoded.tobytes())
    report = audit_oct(neh, "neh")
    assert problems(report, "duplicate_image") == []
    [near] = problems(report, "near_duplicate", "blocking")
    assert "'DRUSEN/1' and 'DRUSEN/2'" in near.detail
    assert source["Directory"] in near.detail and target["Directory"] in near.detail


def test_structural_problems_are_all_reported(neh):
    rows = rows_of(neh)
    on_disk = rows[1]["Directory"]
    rows[1]["Directory"] = on_disk.lower()  # case mismatch
    ghost = dict(rows[2], Directory=rows[2]["Directory"].replace(".jpg", "_missing.jpg"))
    write_rows(neh, rows + [ghost, rows[4]])  # a row without its file, a repeated row
    extra = neh / rows[3]["Directory"].replace(".jpg", "_unlisted.jpg")
    shutil.copyfile(neh / rows[3]["Directory"], extra)
    report = audit_oct(neh, "neh", near_duplicates=False)
    [case] = problems(report, "case_mismatch", "warning")
    assert (case.line, case.image_id) == (3, on_disk) and on_disk.lower() in case.detail
    [missing] = problems(report, "missing_file", "blocking")
    assert missing.line == len(rows) + 2 and ghost["Directory"] in missing.detail
    assert missing.path == str(neh / "data_information.csv")
    [repeated] = problems(report, "duplicate_row", "warning")
    assert repeated.line == len(rows) + 3 and "line 6" in repeated.detail
    [unlisted] = problems(report, "file_without_row", "warning")
    assert unlisted.path == str(extra)
    # the copied, unlisted file is not an image of the dataset, so it is no duplicate either
    assert problems(report, "duplicate_image") == []


def test_missing_column_is_reported_not_raised(neh):
    rows = [{k: v for k, v in r.items() if k != "Eye"} for r in rows_of(neh)]
    write_rows(neh, rows)
    report = audit_oct(neh, "neh")
    [missing] = problems(report, "missing_columns", "blocking")
    assert "'Eye'" in missing.detail and missing.line == 1
    assert report.n_images == 0


def test_too_few_patients_for_the_folds(clean_neh):
    report = audit_oct(clean_neh, "neh", near_duplicates=False, n_folds=3)
    few = problems(report, "too_few_patients", "blocking")
    assert sorted(p.detail.split("'")[1] for p in few) == ["CNV", "DRUSEN", "NORMAL"]


def oct2017_tree(root: Path) -> Path:
    for rel in ["train/CNV/CNV-1-1.jpeg", "train/NORMAL/NORMAL-2-1.jpeg", "train/NORMAL/NORMAL-3-1.jpeg",
                "test/CNV/CNV-2-1.jpeg", "test/NORMAL/NORMAL-4-1.jpeg"]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(zlib.crc32(rel.encode()))
        cv2.imwrite(str(path), rng.integers(0, 255, (48, 64), dtype=np.uint8))
    return root


def test_train_test_overlap_depends_on_the_mode(tmp_path):
    root = oct2017_tree(tmp_path)
    cv = audit_oct(root, "oct2017", mode="cv")
    [warning] = problems(cv, "train_test_overlap")
    assert warning.severity == "warning" and warning.image_id == "test/CNV/CNV-2-1.jpeg" and "'2'" in warning.detail
    assert cv.blocking == []
    official = audit_oct(root, "oct2017", mode="official")
    [blocking] = problems(official, "train_test_overlap")
    assert blocking.severity == "blocking"
    with pytest.raises(DataError, match="patient '2' has 1 training and 1 test image"):
        integrity_gate(official, exclude=True)


def test_official_mode_needs_an_official_split(clean_neh):
    report = audit_oct(clean_neh, "neh", near_duplicates=False, mode="official")
    assert problems(report, "no_official_split", "blocking")
    with pytest.raises(ConfigError, match="mode"):
        audit_oct(clean_neh, "neh", mode="holdout")


def test_real_fixture_audit(shared_fixtures):
    root = shared_fixtures / "oct2017-real"
    report = audit_oct(root, "oct2017", n_folds=5)
    assert report.blocking == []
    assert report.images_per_class == {"CNV": 8, "DME": 8, "DRUSEN": 8, "NORMAL": 8}
    names = [p.name for p in root.glob("*/*.jpeg")]
    assert report.images_per_patient == {
        pid: sum(n.split("-")[1] == pid for n in names) for pid in {n.split("-")[1] for n in names}}
    summary = json.loads(json.dumps(report.to_dict()))
    assert summary["counts"]["images"] == 32 and summary["counts"]["patients"] == len(report.images_per_patient)
    assert summary["counts"]["per_class"]["DME"] == {"images": 8, "patients": len({n.split("-")[1] for n in names
                                                                                  if n.startswith("DME")})}
    assert summary["n_blocking"] == 0 and summary["problems"] == []
