"""The face dataset audit collects every problem in one pass; the integrity gate stops or excludes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from kdcore.errors import DataError
from facekd.audit import audit_faces, integrity_gate
from facekd.formats import load_faces
from facekd.formats.cofw import close_mat_files

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"


def photo(seed: int, width: int = 64, height: int = 56) -> np.ndarray:
    small = np.random.default_rng(seed).integers(0, 256, (5, 6, 3)).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def write_pts(path: Path, rows: list) -> None:
    path.write_text(f"version: 1\nn_points: {len(rows)}\n{{\n" + "\n".join(f"{x} {y}" for x, y in rows) + "\n}\n")


def good_points(seed: int, n: int = 68) -> list:
    return np.random.default_rng(seed).uniform(5, 40, (n, 2)).round(2).tolist()


def write_pair(directory: Path, name: str, seed: int, image: np.ndarray | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(directory / f"{name}.jpg"), photo(seed) if image is None else image)
    write_pts(directory / f"{name}.pts", good_points(seed))


def kinds(report, severity=None) -> dict[str, list]:
    found: dict[str, list] = {}
    for problem in report.problems:
        if severity is None or problem.severity == severity:
            found.setdefault(problem.kind, []).append(problem)
    return found


@pytest.fixture
def clean_folder(tmp_path: Path) -> Path:
    for i in range(6):
        write_pair(tmp_path / "data", f"face{i}", seed=i)
    return tmp_path / "data"


def test_clean_folder_has_no_problems(clean_folder):
    report = audit_faces(clean_folder, "folder")
    assert report.problems == []
    assert (report.images, report.faces, report.subjects) == (6, 6, 6)
    assert report.per_subset == {"all": {"images": 6, "faces": 6, "subjects": 6}}
    assert integrity_gate(report, exclude=False) == []
    assert len(report.records) == 6


@pytest.fixture
def broken_folder(clean_folder: Path) -> Path:
    d = clean_folder
    ok, buffer = cv2.imencode(".jpg", photo(100))
    (d / "truncated.jpg").write_bytes(buffer.tobytes()[: len(buffer) // 2])
    write_pts(d / "truncated.pts", good_points(100))
    cv2.imwrite(str(d / "no_pts.jpg"), photo(101))
    write_pts(d / "no_image.pts", good_points(102))
    write_pair(d, "short", 103)
    write_pts(d / "short.pts", good_points(103, n=67))
    write_pair(d, "nan", 104)
    write_pts(d / "nan.pts", good_points(104, n=67) + [["nan", "3"]])
    write_pair(d, "text", 105)
    write_pts(d / "text.pts", good_points(105, n=67) + [["x", "3"]])
    write_pair(d, "outside", 106)
    write_pts(d / "outside.pts", good_points(106, n=67) + [[1000, 3]])
    shutil.copy(d / "face0.jpg", d / "copy_of_face0.jpg")
    write_pts(d / "copy_of_face0.pts", good_points(200))
    resized = cv2.resize(photo(1), (60, 52), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(d / "resized_face1.jpg"), resized, [cv2.IMWRITE_JPEG_QUALITY, 60])
    write_pts(d / "resized_face1.pts", good_points(201))
    return d


def test_audit_collects_every_problem(broken_folder):
    report = audit_faces(broken_folder, "folder")
    blocking = kinds(report, "blocking")
    assert set(blocking) == {"unreadable_image", "missing_pair", "bad_annotation", "wrong_point_count",
                             "bad_landmarks"}
    assert blocking["unreadable_image"][0].path.endswith("truncated.jpg")
    assert "truncated JPEG" in blocking["unreadable_image"][0].detail
    assert sorted(Path(p.path).name for p in blocking["missing_pair"]) == ["no_image.pts", "no_pts.jpg"]
    assert sorted(p.record_ids[0] for p in blocking["bad_annotation"]) == ["nan", "text"]
    assert "non-finite" in " ".join(p.detail for p in blocking["bad_annotation"])
    assert blocking["wrong_point_count"][0].record_ids == ("short",)
    assert blocking["bad_landmarks"][0].record_ids == ("outside",)
    # no subjects.csv: duplicates are reported as warnings, exact and near
    warnings = kinds(report, "warning")
    assert set(warnings) == {"duplicate_image", "near_duplicate_image"}
    assert set(warnings["duplicate_image"][0].record_ids) == {"face0", "copy_of_face0"}
    assert set(warnings["near_duplicate_image"][0].record_ids) == {"face1", "resized_face1"}
    # the good faces: 6 clean + 2 copies + truncated (parses; its pixels fail)
    assert report.faces == 9 and len(report.records) == 9
    json.dumps(report.to_dict())
    assert report.to_dict()["n_blocking"] == len(report.blocking) == 7


def test_gate_raises_or_excludes(broken_folder):
    report = audit_faces(broken_folder, "folder")
    with pytest.raises(DataError, match=r"7 blocking data problem\(s\)") as error:
        integrity_gate(report, exclude=False)
    assert "truncated.jpg" in str(error.value) and "no_pts.jpg" in str(error.value)
    excluded = integrity_gate(report, exclude=True)
    assert excluded == sorted(["truncated", "no_pts", "no_image", "nan", "text", "short", "outside"])
    kept = {r.record_id for r in report.records if r.record_id not in set(excluded)}
    assert kept == {f"face{i}" for i in range(6)} | {"copy_of_face0", "resized_face1"}


def test_duplicates_across_real_subjects_are_blocking(clean_folder):
    shutil.copy(clean_folder / "face2.jpg", clean_folder / "face2b.jpg")
    write_pts(clean_folder / "face2b.pts", good_points(300))
    subjects = "".join(f"face{i}.jpg,s{i}\n" for i in range(6))
    (clean_folder / "subjects.csv").write_text("image,subject\n" + subjects + "face2b.jpg,s9\n")
    report = audit_faces(clean_folder, "folder")
    assert report.subjects_known and report.subjects == 7
    assert [(p.severity, p.kind) for p in report.problems] == [("blocking", "duplicate_image")]
    assert set(integrity_gate(report, exclude=True)) == {"face2", "face2b"}
    # the same copy under the same subject is no leak
    (clean_folder / "subjects.csv").write_text("image,subject\n" + subjects + "face2b.jpg,s2\n")
    assert audit_faces(clean_folder, "folder").problems == []


def test_gate_lists_twenty_and_counts_the_rest(tmp_path):
    write_pair(tmp_path, "good", 0)
    for i in range(25):
        cv2.imwrite(str(tmp_path / f"lonely{i:02d}.jpg"), photo(10 + i))
    report = audit_faces(tmp_path, "folder", check_images=False)
    with pytest.raises(DataError) as error:
        integrity_gate(report, exclude=False)
    message = str(error.value)
    assert "25 blocking data problem(s) (25 missing_pair)" in message
    assert "lonely19.jpg" in message and "lonely20.jpg" not in message and "... and 5 more" in message


def test_check_images_false_skips_decoding_but_finds_exact_copies(broken_folder):
    report = audit_faces(broken_folder, "folder", check_images=False)
    assert "unreadable_image" not in kinds(report)
    assert "near_duplicate_image" not in kinds(report)
    assert "duplicate_image" in kinds(report)


def test_300w_counts_per_subset_and_missing_folder(tmp_path):
    layout = {"lfpw/trainset": 2, "helen/trainset": 1, "afw": 1, "lfpw/testset": 1, "helen/testset": 1}
    seed = 0
    for folder, count in layout.items():
        for i in range(count):
            seed += 1
            write_pair(tmp_path / folder, f"img{i}", seed)
    report = audit_faces(tmp_path, "300w")
    assert report.per_subset["train"]["faces"] == 4 and report.per_subset["common"]["faces"] == 2
    assert "challenging" not in report.per_subset
    missing = kinds(report, "blocking")["missing_file"]
    assert len(missing) == 1 and missing[0].path.endswith("ibug") and missing[0].record_ids == ()
    assert {p.detail.split("'")[1] for p in kinds(report, "warning")["count_mismatch"]} == {
        "train", "common", "challenging"}
    with pytest.raises(DataError, match="cannot be fixed by leaving faces out"):
        integrity_gate(report, exclude=True)
    assert audit_faces(tmp_path, "300w", "common").blocking == []


def test_wflw_audit_goes_past_a_bad_line(tmp_path):
    image = tmp_path / "WFLW_images" / "0--Parade" / "a.jpg"
    image.parent.mkdir(parents=True)
    cv2.imwrite(str(image), photo(0))
    lists = tmp_path / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    lists.mkdir(parents=True)
    coords = " ".join(f"{v}" for v in np.linspace(5, 40, 196))
    good = f"{coords} 1 2 50 50 0 0 0 0 0 0 0--Parade/a.jpg"
    (lists / "list_98pt_rect_attr_train.txt").write_text(
        "\n".join([good, good.replace(" 0 0 0 0 0 0 ", " 0 0 7 0 0 0 "), good]) + "\n")
    report = audit_faces(tmp_path, "wflw", "train")
    assert report.faces == 2 and report.images == 1 and report.subjects == 1
    bad = kinds(report, "blocking")["bad_annotation"]
    assert [p.path for p in bad] == [f"{lists / 'list_98pt_rect_attr_train.txt'}:2"]
    assert "illumination must be 0 or 1" in bad[0].detail
    assert [r.record_id for r in report.records] == ["train/0--Parade/a#0", "train/0--Parade/a#1"]


def test_cofw_duplicate_pixels_inside_the_mat(tmp_path):
    images = [cv2.cvtColor(photo(i), cv2.COLOR_BGR2RGB) for i in (0, 1)] + [cv2.cvtColor(photo(0), cv2.COLOR_BGR2RGB)]
    cell = np.empty((3, 1), dtype=object)
    for i, image in enumerate(images):
        cell[i, 0] = image
    rng = np.random.default_rng(0)
    phis = np.concatenate([rng.uniform(2, 40, (3, 58)), np.zeros((3, 29))], axis=1)
    scipy.io.savemat(tmp_path / "COFW_test_color.mat",
                     {"IsT": cell, "phisT": phis, "bboxesT": np.tile([1.0, 1, 30, 30], (3, 1))})
    try:
        report = audit_faces(tmp_path, "cofw", "test")
        assert report.faces == 3
        assert [(p.kind, set(p.record_ids)) for p in report.warnings if "duplicate" in p.kind] == [
            ("duplicate_image", {"test/0001", "test/0003"})]
    finally:
        close_mat_files()


@pytest.mark.real_fixtures
def test_real_lfpw_sample_is_clean():
    root = FIXTURES / "faces-lfpw"
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    report = audit_faces(root, "folder")
    assert report.blocking == [] and report.faces == 50
    assert {r.record_id for r in report.records} == {r.record_id for r in load_faces(root, "folder")}
