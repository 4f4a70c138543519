"""Volume inputs: DICOM OPT (plain and compressed) and HEYEX exports read by the libraries, broken files refused,
B-scan selection, labels by file or patient/visit, hashed patient ids, patient-level folds, the integrity gate."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from kdcore.errors import ConfigError, DataError
from medkd.audit import audit_oct, integrity_gate
from medkd.data import load_oct_dataset
from medkd.data.volume_scan import VolumeOptions, scan_volumes
from medkd.data.volumes import (Selection, VolumeReadError, parse_selection, read_frame, read_frames,
                                read_volume_info, select_frames)
from tests.medkd.dicom_opt import real_or_synthetic_bscans, write_opt


@pytest.fixture(scope="module")
def bscans():
    return real_or_synthetic_bscans(12)


# ---------------------------------------------------------------------------------------------------- DICOM

@pytest.mark.parametrize("compression", [None, "rle", "jpeg2000"])
def test_dicom_opt_frames_and_metadata(tmp_path, bscans, compression):
    source = write_opt(tmp_path / "v.dcm", bscans[:4], patient_id="PAT-7", laterality="L", study_date="20230105",
                       compression=compression)
    info = read_volume_info(tmp_path / "v.dcm")
    assert (info.kind, info.reader, info.n_frames, info.height, info.width) == ("dicom", "pydicom", 4, 124, 192)
    assert (info.patient_id, info.laterality, info.visit_date) == ("PAT-7", "OS", "2023-01-05")
    assert info.device == "Heidelberg Engineering Spectralis"
    assert info.sop_instance_uid == source.SOPInstanceUID and info.series_uid == source.SeriesInstanceUID
    assert (info.transfer_syntax != "1.2.840.10008.1.2.1") == (compression is not None)
    from medkd.data import volumes

    volumes._CACHE.clear()
    np.testing.assert_array_equal(read_frame(tmp_path / "v.dcm", 3), bscans[3])  # random access: one frame decoded
    assert not volumes._CACHE
    frames = read_frames(tmp_path / "v.dcm")
    np.testing.assert_array_equal(frames, np.stack(bscans[:4]))  # lossless syntaxes: the very pixels
    np.testing.assert_array_equal(read_frame(tmp_path / "v.dcm", 2), bscans[2])


def _broken_dicoms(folder: Path, bscans) -> dict[str, str]:
    """name -> the reason expected in the refusal."""
    write_opt(folder / "plain.dcm", bscans[:3])
    write_opt(folder / "j2k.dcm", bscans[:3], compression="jpeg2000")
    data = (folder / "plain.dcm").read_bytes()
    (folder / "truncated.dcm").write_bytes(data[: len(data) // 2])
    data = (folder / "j2k.dcm").read_bytes()
    (folder / "truncated_j2k.dcm").write_bytes(data[: len(data) - 2000])
    (folder / "junk.dcm").write_bytes(b"not a dicom file " * 20)
    (folder / "empty.dcm").write_bytes(b"")
    write_opt(folder / "ct.dcm", bscans[:1], sop_class="1.2.840.10008.5.1.4.1.1.2")
    for name in ("plain.dcm", "j2k.dcm"):
        (folder / name).unlink()
    return {"truncated.dcm": "truncated", "truncated_j2k.dcm": "truncated", "junk.dcm": "not a DICOM file",
            "empty.dcm": "empty file", "ct.dcm": "unsupported DICOM SOP class 1.2.840.10008.5.1.4.1.1.2 (CT Image"}


def test_broken_dicoms_are_refused_with_the_reason(tmp_path, bscans):
    for name, reason in _broken_dicoms(tmp_path, bscans).items():
        with pytest.raises(VolumeReadError, match=re.escape(reason)) as caught:
            read_volume_info(tmp_path / name)
            read_frames(tmp_path / name)
        assert caught.value.path.endswith(name)


# ---------------------------------------------------------------------------------------------- HEYEX (eyepy)

@pytest.fixture(scope="module")
def vendor(shared_fixtures):
    folder = shared_fixtures / "oct-vendor"
    if not (folder / "heyex_vol" / "test_volume.vol").is_file():
        pytest.skip("no vendor fixtures in ../shared/fixtures/oct-vendor")
    return folder


@pytest.mark.real_fixtures
@pytest.mark.parametrize("name,importer", [("heyex_vol/test_volume.vol", "import_heyex_vol"),
                                           ("heyex_xml/test_dummy.xml", "import_heyex_xml")])
def test_heyex_exports_match_eyepy(vendor, name, importer):
    import eyepy

    expected = getattr(eyepy, importer)(vendor / name).data
    info = read_volume_info(vendor / name)
    assert (info.n_frames, info.height, info.width) == expected.shape == (10, 40, 50)
    assert (info.reader, info.laterality, info.visit_date, info.patient_id) == ("eyepy", "OD", "2000-01-01",
                                                                                 "Study-01")
    np.testing.assert_array_equal(read_frames(vendor / name), expected)


@pytest.mark.real_fixtures
def test_broken_heyex_copies_are_refused(vendor, tmp_path):
    data = (vendor / "heyex_vol" / "test_volume.vol").read_bytes()
    (tmp_path / "half.vol").write_bytes(data[: len(data) // 2])
    (tmp_path / "header_only.vol").write_bytes(data[:2048])
    xml_missing = tmp_path / "xml_missing"
    shutil.copytree(vendor / "heyex_xml", xml_missing)
    (xml_missing / "B3.tif").unlink()
    xml_cut = tmp_path / "xml_cut"
    shutil.copytree(vendor / "heyex_xml", xml_cut)
    text = (xml_cut / "test_dummy.xml").read_text()
    (xml_cut / "test_dummy.xml").write_text(text[: len(text) // 2])
    for path in (tmp_path / "half.vol", tmp_path / "header_only.vol", xml_missing / "test_dummy.xml",
                 xml_cut / "test_dummy.xml"):
        with pytest.raises(VolumeReadError, match="cannot read heyex_(vol|xml) export with eyepy") as caught:
            read_volume_info(path)
        assert caught.value.path == str(path)


# --------------------------------------------------------------------------------------------------- selection

@pytest.mark.parametrize("policy,n,expected", [
    ("all", 5, [0, 1, 2, 3, 4]), ("central", 49, [24]), ("central", 1, [0]),
    ({"central_k": 5}, 49, [22, 23, 24, 25, 26]), ("central_k:4", 10, [3, 4, 5, 6]),
    ({"central_k": 9}, 4, [0, 1, 2, 3]), ({"every": 3}, 10, [0, 3, 6, 9]), ("every:20", 7, [0])])
def test_bscan_selection(policy, n, expected):
    assert select_frames(n, parse_selection(policy)) == expected


@pytest.mark.parametrize("bad", ["middle", {"central_k": 0}, "every:x", {"every": 2, "central_k": 3}, "central:2"])
def test_bad_selection_is_named(bad):
    with pytest.raises(ConfigError, match="data.bscans"):
        parse_selection(bad)


def test_recipe_checks_the_selection():
    from kdcore.config import validate_recipe
    from medkd.config import OCTRecipe

    assert validate_recipe(OCTRecipe, {"data": {"bscans": {"every": 4}}}).data.bscans == {"every": 4}
    with pytest.raises(ConfigError, match=r"data\.bscans"):
        validate_recipe(OCTRecipe, {"data": {"bscans": {"central_k": -2}}})


# ------------------------------------------------------------------------------------------ folder + labels

def clinic(root: Path, bscans, labels: str | None) -> Path:
    """Four volumes of three patients (P-A twice, at two visits), one a compressed file in a sub-folder."""
    write_opt(root / "a1.dcm", bscans[0:3], patient_id="P-A", study_date="20240101")
    write_opt(root / "site2" / "a2.dcm", bscans[3:6], patient_id="P-A", study_date="20240601",
              compression="jpeg2000")
    write_opt(root / "b.dcm", bscans[6:9], patient_id="P-B", laterality="L")
    write_opt(root / "c.dcm", bscans[9:12], patient_id="P-C")
    (root / "notes.txt").write_text("export of 2024-06")
    if labels is not None:
        (root / "labels.csv").write_text(labels)
    return root


BY_PATIENT = "patient,visit,eye,label\nP-A,2024-01-01,,CNV\nP-A,2024-06-01,OD,CNV\nP-B,,OS,NORMAL\nP-C,,,NORMAL\n"
BY_FILE = "file,label\na1.dcm,CNV\nSITE2/a2.dcm,CNV\nb.dcm,NORMAL\nc.dcm,NORMAL\n"


def salted(patient: str) -> str:
    return "H" + str(sum(map(ord, patient)))


@pytest.mark.parametrize("labels", [BY_PATIENT, BY_FILE])
def test_volume_folder_loads_with_selection_and_hashed_patients(tmp_path, bscans, labels):
    root = clinic(tmp_path, bscans, labels)
    ds = load_oct_dataset(root, "volumes", volumes=VolumeOptions(selection="central", patient_key=salted))
    assert [r.image_id for r in ds.records] == ["a1.dcm#001", "b.dcm#001", "c.dcm#001", "site2/a2.dcm#001"]
    assert ds.classes == ["CNV", "NORMAL"] and ds.labels == ["CNV", "NORMAL", "NORMAL", "CNV"]
    assert ds.patients == [salted("P-A"), salted("P-B"), salted("P-C"), salted("P-A")]
    assert [r.eye for r in ds.records] == ["OD", "OS", "OD", "OD"]
    assert [r.visit for r in ds.records][::3] == ["2024-01-01", "2024-06-01"]
    assert ds.meta == {"bscan_selection": {"policy": "central"}}
    assert any("4 volume(s) read: 4 dicom (pydicom)" in n for n in ds.notes)
    every = load_oct_dataset(root, "volumes", volumes=VolumeOptions(selection={"every": 2}))
    assert [r.frame for r in every.records][:2] == [0, 2] and len(every) == 8


def test_label_problems_name_the_file_or_line_and_never_the_patient(tmp_path, bscans):
    labels = "patient,visit,label\nP-A,2024-01-01,CNV\nP-A,,NORMAL\nP-B,,NORMAL\nP-Z,,CNV\nP-C,,WEIRD\n"
    root = clinic(tmp_path, bscans, labels)
    (root / "scan.oct").write_bytes(b"\0" * 64)
    scan = scan_volumes(root, ["CNV", "NORMAL"], VolumeOptions(patient_key=salted))
    found = {(p.kind, Path(p.path).name, p.line) for p in scan.problems}
    assert ("label_conflict", "labels.csv", None) in found  # a1.dcm: CNV by line 2, NORMAL by line 3
    assert ("unknown_class", "labels.csv", 6) in found
    assert ("missing_label", "c.dcm", None) in found
    assert ("row_without_volume", "labels.csv", 5) in found
    assert ("unsupported_file", "scan.oct", None) in found
    text = json.dumps([p.to_dict() for p in scan.problems])
    assert "P-A" not in text and "P-Z" not in text and "lines 2, 3" in text
    with pytest.raises(DataError, match="a1.dcm' is labelled CNV and NORMAL by lines 2, 3"):
        scan.to_dataset()


def test_missing_labels_csv_is_blocking_for_training(tmp_path, bscans):
    root = clinic(tmp_path, bscans, None)
    with pytest.raises(DataError, match="labels CSV not found"):
        load_oct_dataset(root, "volumes")


def test_integrity_gate_refuses_broken_volumes_by_name(tmp_path, bscans):
    root = clinic(tmp_path / "data", bscans, BY_FILE)
    reasons = _broken_dicoms(root, bscans)
    report = audit_oct(root, "volumes", near_duplicates=False, volumes=VolumeOptions(patient_key=salted))
    refused = {Path(p.path).name: p.detail for p in report.blocking if p.kind == "unreadable_volume"}
    assert set(refused) == set(reasons)
    for name, reason in reasons.items():
        assert reason in refused[name]
    assert "P-A" not in json.dumps(report.to_dict())
    with pytest.raises(DataError, match="truncated_j2k.dcm"):
        integrity_gate(report, exclude=True)  # a broken volume is never silently left out


def test_audit_finds_the_same_bscan_under_two_patients(tmp_path, bscans):
    root = clinic(tmp_path, bscans, BY_FILE.replace("c.dcm,NORMAL", "c.dcm,NORMAL\nd.dcm,NORMAL"))
    write_opt(root / "d.dcm", bscans[9:12], patient_id="P-D")  # c.dcm's B-scans filed under another patient
    report = audit_oct(root, "volumes", near_duplicates=False, volumes=VolumeOptions(patient_key=salted))
    leaks = [p for p in report.blocking if p.kind == "duplicate_image"]
    assert len(leaks) == 3 and all("c.dcm#" in p.detail and "d.dcm#" in p.detail for p in leaks)


def test_every_volume_of_a_patient_stays_in_one_fold(tmp_path, bscans):
    from kdcore.cv import make_fold_manifest

    root = clinic(tmp_path, bscans, BY_PATIENT)
    ds = load_oct_dataset(root, "volumes", volumes=VolumeOptions(patient_key=salted))
    manifest = make_fold_manifest(ds.patients, None, 3, 0.5, seed=0)
    a_images = [r for r in ds.records if r.patient == salted("P-A")]
    assert len(a_images) == 6  # two visits, three B-scans each
    assert [salted("P-A") in split.test for split in manifest.folds].count(True) == 1  # one fold holds them all
    assert all(salted("P-A") in set(split.test) | set(split.train) | set(split.val) for split in manifest.folds)


def test_run_data_preparation_writes_selection_and_hashes(tmp_path, bscans):
    from kdcore.config import validate_recipe
    from kdcore.run_folder import RunDir
    from medkd.config import OCTRecipe
    from medkd.data_prep import prepare_dataset, write_dataset_index

    root = clinic(tmp_path / "data", bscans, "patient,label\nP-A,CNV\nP-B,CNV\nP-C,NORMAL\nP-D,NORMAL\n")
    write_opt(root / "d.dcm", real_or_synthetic_bscans(3, start=12), patient_id="P-D")
    recipe = validate_recipe(OCTRecipe, {"data": {"format": "volumes", "root": str(root), "bscans": {"central_k": 2},
                                                  "near_duplicates": False}, "cv": {"folds": 2}})
    run = RunDir.create(tmp_path / "run", recipe, 0)
    ds = prepare_dataset(recipe, run)
    write_dataset_index(run, ds)
    index = json.loads((run.path / "dataset.json").read_text())
    assert index["bscan_selection"] == {"policy": "central_k", "k": 2}
    assert [i["frame"] for i in index["items"]][:2] == [0, 1] and index["items"][0]["path"] == "a1.dcm"
    written = "".join(p.read_text() for p in run.path.rglob("*") if p.is_file() and p.suffix in (".json", ".log",
                                                                                                   ".jsonl"))
    assert "P-A" not in written and "P-B" not in written
    assert len({i["patient"] for i in index["items"]}) == 4


def test_training_items_are_the_volume_frames(tmp_path, bscans):
    from medkd.dataset import BScanDataset
    from medkd.preprocess import preprocess

    root = clinic(tmp_path, bscans, BY_FILE)
    ds = load_oct_dataset(root, "volumes", volumes=VolumeOptions(selection={"every": 2}))
    items = BScanDataset(ds.records, ds.classes, image_size=32)
    for index in (0, 1, 5):  # a1.dcm frames 0 and 2, then site2/a2.dcm (JPEG 2000) frame 2
        record = ds.records[index]
        expected = preprocess(bscans[{"a1.dcm": 0, "b.dcm": 6, "c.dcm": 9, "site2/a2.dcm": 3}[
            record.image_id.split("#")[0]] + record.frame], 32)
        np.testing.assert_array_equal(items[index]["image"].numpy(), expected)
        assert items[index]["target"] == ds.classes.index(record.label)


@pytest.mark.parametrize("name,reason", [
    ("scan.e2e", "cannot read e2e export with oct-converter"),
    ("scan.fds", "cannot read fds files with numpy"),  # oct-converter 0.7 + numpy 2: refused, and why
    ("scan.img", "cannot read zeiss_img export with oct-converter"),
])
def test_broken_or_unreadable_vendor_files_name_the_reader(tmp_path, name, reason):
    (tmp_path / name).write_bytes(b"\x01junk" * 100)
    with pytest.raises(VolumeReadError, match=reason):
        read_volume_info(tmp_path / name)
