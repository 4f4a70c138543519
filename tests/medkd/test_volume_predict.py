"""`medkd predict` on volumes: a row per B-scan and per volume, the aggregation, DICOM SRs that pydicom reads,
Grad-CAM overlays, and no patient identifier in the CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medkd.cli import main
from medkd.export import export_run
from medkd.predictor import OCTClassifier
from medkd.volume_predict import aggregate_probabilities
from tests.medkd.dicom_opt import real_or_synthetic_bscans, write_opt
from tests.medkd.conftest import CLASSES, make_oct_run

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    base = tmp_path_factory.mktemp("oct-volume-export")
    run = make_oct_run(base, size=48, report=False)
    export_run(run, folds=0, formats="onnx", out_dir=base / "export", n_inputs=4)
    return base / "export"


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A hold-out series from real B-scans: a 5-frame JPEG 2000 volume and a 3-frame plain one."""
    folder = tmp_path_factory.mktemp("series")
    first = write_opt(folder / "in" / "od.dcm", real_or_synthetic_bscans(5, start=3), patient_id="MRN-998877",
                      patient_name="Smith^Ann", compression="jpeg2000")
    second = write_opt(folder / "in" / "os.dcm", real_or_synthetic_bscans(3, start=20), patient_id="MRN-998877",
                       patient_name="Smith^Ann", laterality="L", study_uid=first.StudyInstanceUID,
                       series_uid=first.SeriesInstanceUID)
    return folder, first, second


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_aggregations_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    np.testing.assert_allclose(aggregate_probabilities(probs, "mean"), [1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(aggregate_probabilities(probs, "max"), np.array([0.7, 0.6, 0.6]) / 1.9)
    top2 = np.array([(0.7 + 0.2) / 2, (0.6 + 0.2) / 2, (0.6 + 0.3) / 2])
    np.testing.assert_allclose(aggregate_probabilities(probs, "topk-mean", k=2), top2 / top2.sum())
    np.testing.assert_allclose(aggregate_probabilities(probs, "topk-mean", k=9), aggregate_probabilities(probs, "mean"))


def test_predict_rows_per_frame_and_volume_and_an_sr(export, series, tmp_path, capsys):
    folder, first, second = series
    out = tmp_path / "pred.csv"
    code = main(["predict", str(export), str(folder / "in"), "--out", str(out), "--dicom-sr", str(tmp_path / "sr")])
    assert code == 0
    rows = read_rows(out)
    frames = [r for r in rows if r["level"] == "bscan"]
    volumes = [r for r in rows if r["level"] == "volume"]
    assert len(frames) == 8 and len(volumes) == 2
    assert [r["frame"] for r in frames] == ["1", "2", "3", "4", "5", "1", "2", "3"]
    assert {r["sop_instance_uid"] for r in volumes} == {first.SOPInstanceUID, second.SOPInstanceUID}
    assert [r["eye"] for r in volumes] == ["OD", "OS"] and volumes[0]["aggregate"] == "mean"
    # the very probabilities of the classifier on the decoded frames, and their mean per volume
    classifier = OCTClassifier.load(export)
    expected = classifier.predict_proba(real_or_synthetic_bscans(5, start=3))
    got = np.array([[float(r[f"prob_{c}"]) for c in CLASSES] for r in frames[:5]])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose([float(volumes[0][f"prob_{c}"]) for c in CLASSES], expected.mean(0), atol=1e-5)
    assert volumes[0]["class"] == CLASSES[int(expected.mean(0).argmax())]
    text = out.read_text() + capsys.readouterr().out
    assert "MRN-998877" not in text and "Smith" not in text  # identified by file and SOP instance only

    srs = sorted((tmp_path / "sr").glob("*.dcm"))
    assert [p.name for p in srs] == [f"SR_{first.SeriesInstanceUID}.dcm"]  # one SR per source series
    sr = pydicom.dcmread(srs[0])
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR and sr.Modality == "SR"
    assert (sr.PatientID, str(sr.PatientName), sr.StudyInstanceUID) == ("MRN-998877", "Smith^Ann",
                                                                       first.StudyInstanceUID)
    evidence = {ref.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for s in study.ReferencedSeriesSequence for ref in s.ReferencedSOPSequence}
    assert evidence == {first.SOPInstanceUID, second.SOPInstanceUID}
    groups = _measurement_groups(sr)
    assert len(groups) == 2
    for group, volume in zip(groups, volumes):
        assert group["source"] == (volume["sop_instance_uid"], [1, 2, 3, 4, 5] if volume["eye"] == "OD" else [1, 2, 3])
        np.testing.assert_allclose([group["probabilities"][f"Probability of {c}"] for c in CLASSES],
                                   [float(volume[f"prob_{c}"]) for c in CLASSES], atol=1e-6)
        assert group["predicted"] == volume["class"]
        assert group["algorithm"]["Algorithm Name"] == "tiny-oct student (test_efficientnet)"
        digest = __import__("hashlib").sha256((export / "model.onnx").read_bytes()).hexdigest()
        assert group["algorithm"]["Algorithm Parameters"] == f"export sha256 {digest}"
        assert group["algorithm"]["Algorithm Version"].startswith("kdvision ")


def _measurement_groups(sr) -> list[dict]:
    """Probabilities, predicted class, source image and algorithm of each TID 1500 measurement group."""
    def name(item):
        return item.ConceptNameCodeSequence[0].CodeMeaning

    imaging = next(i for i in sr.ContentSequence if name(i) == "Imaging Measurements")
    groups = []
    for group in imaging.ContentSequence:
        found = {"probabilities": {}, "algorithm": {}}
        for item in group.ContentSequence:
            if item.ValueType == "NUM":
                found["probabilities"][name(item)] = float(item.MeasuredValueSequence[0].NumericValue)
            elif item.ValueType == "CODE" and name(item) == "Predicted class":
                found["predicted"] = item.ConceptCodeSequence[0].CodeMeaning
            elif item.ValueType == "IMAGE":
                ref = item.ReferencedSOPSequence[0]
                found["source"] = (ref.ReferencedSOPInstanceUID, [int(n) for n in ref.ReferencedFrameNumber])
            elif item.ValueType == "TEXT" and name(item).startswith("Algorithm"):
                found["algorithm"][name(item)] = item.TextValue
        groups.append(found)
    return groups


def test_default_aggregation_comes_from_the_export(export, series, tmp_path):
    folder, *_ = series
    contract = json.loads((export / "model.json").read_text())
    assert contract["volume"] == {"aggregate": "mean", "topk": 3, "bscans": "all"}  # recipe defaults, in the export
    changed = tmp_path / "export"
    changed.mkdir()
    for f in export.iterdir():
        if f.is_file():
            (changed / f.name).write_bytes(f.read_bytes())
    contract["volume"] = {"aggregate": "topk-mean", "topk": 2, "bscans": {"central_k": 3}}
    (changed / "model.json").write_text(json.dumps(contract))
    from kdcore.export import write_export_marker

    write_export_marker(changed)  # as an export made with these volume defaults would have it
    assert main(["predict", str(changed), str(folder / "in" / "od.dcm"), "--out", str(tmp_path / "p.csv")]) == 0
    rows = read_rows(tmp_path / "p.csv")
    assert [r["frame"] for r in rows] == ["2", "3", "4", ""] and rows[-1]["aggregate"] == "topk-mean:2"
    probs = np.array([[float(r[f"prob_{c}"]) for c in CLASSES] for r in rows[:3]])
    np.testing.assert_allclose([float(rows[-1][f"prob_{c}"]) for c in CLASSES],
                               aggregate_probabilities(probs, "topk-mean", 2), atol=2e-6)
    assert main(["predict", str(changed), str(folder / "in" / "od.dcm"), "--out", str(tmp_path / "m.csv"),
                 "--aggregate", "max", "--bscans", "all"]) == 0
    rows = read_rows(tmp_path / "m.csv")
    assert rows[-1]["aggregate"] == "max" and rows[-1]["n_bscans"] == "5"


def test_saliency_writes_one_overlay_per_input(export, series, tmp_path, shared_fixtures):
    import cv2

    folder, *_ = series
    assert main(["predict", str(export), str(folder / "in"), "--out", str(tmp_path / "v.csv"),
                 "--saliency", str(tmp_path / "vol")]) == 0
    overlays = sorted(p.name for p in (tmp_path / "vol").iterdir())
    assert len(overlays) == 8 and overlays[0].startswith("od_f001_") and overlays[-1].startswith("os_f003_")
    scans = sorted((shared_fixtures / "oct2017-real").glob("*/*.jpeg"))[:3]
    assert main(["predict", str(export), *map(str, scans), "--out", str(tmp_path / "i.csv"),
                 "--saliency", str(tmp_path / "img")]) == 0
    written = sorted((tmp_path / "img").iterdir())
    assert len(written) == 3
    for scan, rows in zip(scans, read_rows(tmp_path / "i.csv")):
        image = cv2.imread(str(tmp_path / "img" / f"{scan.stem}_{rows['class']}.png"))
        assert image is not None and image.shape[:2] == cv2.imread(str(scan), cv2.IMREAD_GRAYSCALE).shape
        assert image.std(axis=2).mean() > 1  # coloured: a heat map was blended in, not the grey B-scan alone


def test_a_broken_volume_stops_predict_and_writes_nothing(export, series, tmp_path, capsys):
    folder, *_ = series
    data = (folder / "in" / "od.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 5000])
    out = tmp_path / "p.csv"
    code = main(["predict", str(export), str(folder / "in" / "os.dcm"), str(tmp_path / "cut.dcm"), "--out", str(out),
                 "--dicom-sr", str(tmp_path / "sr")])
    err = capsys.readouterr().err
    assert code == 2 and "cut.dcm: truncated DICOM file" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "sr").exists()
    (tmp_path / "scan.png").write_bytes(b"")
    assert main(["predict", str(export), str(folder / "in" / "os.dcm"), str(tmp_path / "scan.png"), "--out",
                 str(out)]) == 2
    assert "not both" in capsys.readouterr().err and not out.exists()


def test_report_gallery_explains_correct_and_wrong_test_bscans(tmp_path):
    from kdcore.report import HtmlDocument
    from medkd.report_html import _saliency
    from medkd.report_saliency import saliency_gallery

    run = make_oct_run(tmp_path, size=32, report=False)
    items = json.loads((run / "dataset.json").read_text())["items"]
    for fold in (0, 1):
        folder = run / "folds" / f"fold_{fold}" / "student"
        lines = ["id,patient,eye,fold,target,pred," + ",".join(f"prob_{c}" for c in CLASSES)]
        for n, item in enumerate(items[fold::2]):
            pred = item["label"] if n % 3 else CLASSES[(CLASSES.index(item["label"]) + 1) % len(CLASSES)]
            probs = [0.7 if c == pred else 0.1 for c in CLASSES]
            lines.append(f"{item['id']},{item['patient']},,{fold},{item['label']},{pred}," + ",".join(map(str, probs)))
        (folder / "predictions.csv").write_text("\n".join(lines) + "\n")
    gallery = saliency_gallery(run, per_class=1)
    assert gallery["note"] is None
    shown = {(g["true"], g["true"] == g["predicted"]) for g in gallery["items"]}
    assert shown == {(c, ok) for c in CLASSES for ok in (True, False)}  # one correct and one wrong per class
    assert all(g["png"].startswith(b"\x89PNG") for g in gallery["items"])
    doc, pngs = HtmlDocument("t"), {}
    _saliency(doc, gallery, pngs)
    page = doc.render()
    assert "Grad-CAM" in page and page.count("<img") == 8 and len(pngs) == 8
    (run / "config.yaml").write_text("name: tiny-oct\ndata: {root: /nowhere/at/all}\n")
    assert "not reachable" in saliency_gallery(run)["note"]


@pytest.mark.real_fixtures
def test_predict_on_heyex_exports(export, shared_fixtures, tmp_path, capsys):
    vendor = shared_fixtures / "oct-vendor"
    if not (vendor / "heyex_vol" / "test_volume.vol").is_file():
        pytest.skip("no vendor fixtures")
    out = tmp_path / "p.csv"
    assert main(["predict", str(export), str(vendor / "heyex_vol" / "test_volume.vol"),
                 str(vendor / "heyex_xml" / "test_dummy.xml"), "--out", str(out), "--bscans", "every:2"]) == 0
    rows = read_rows(out)
    assert [r["level"] for r in rows].count("volume") == 2 and len(rows) == 2 * (5 + 1)
    assert {r["sop_instance_uid"] for r in rows} == {""} and {r["eye"] for r in rows} == {"OD"}
    assert "Study-01" not in out.read_text()
    code = main(["predict", str(export), str(vendor / "heyex_vol" / "test_volume.vol"),
                 "--out", str(tmp_path / "q.csv"), "--dicom-sr", str(tmp_path / "sr")])
    assert code == 2 and "none of the inputs is a DICOM file" in capsys.readouterr().err
    assert not (tmp_path / "q.csv").exists()


def test_sr_from_a_sparse_export(export, tmp_path):
    """A device export that leaves out optional patient/study attributes still gets an SR (empty, not invented)."""
    source = write_opt(tmp_path / "in" / "v.dcm", real_or_synthetic_bscans(2, start=5))
    for keyword in ("PatientName", "PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber", "StudyDate",
                    "StudyTime", "ReferringPhysicianName", "PatientID", "ImageLaterality", "Laterality"):
        delattr(source, keyword)
    source.save_as(tmp_path / "in" / "v.dcm", enforce_file_format=True)
    assert main(["predict", str(export), str(tmp_path / "in"), "--out", str(tmp_path / "p.csv"), "--dicom-sr",
                 str(tmp_path / "sr")]) == 0
    sr = pydicom.dcmread(next((tmp_path / "sr").glob("SR_*.dcm")))
    assert sr.PatientID == "" and sr.StudyInstanceUID == source.StudyInstanceUID
    assert read_rows(tmp_path / "p.csv")[-1]["eye"] == ""
