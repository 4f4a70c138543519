"""The report's ``fidelity`` section: student against teacher on the same test images, recomputed by hand."""

import csv

import numpy as np
import pytest
from scipy.stats import entropy

from medkd.report import build_report
from tests.medkd.test_report import CLASSES, make_run, strict_loads


def _rows(run, name):
    rows = {}
    for fold in range(3):
        with open(run / "folds" / f"fold_{fold}" / name / "predictions.csv") as f:
            rows.update({r["id"]: r for r in csv.DictReader(f)})
    return rows


def test_fidelity_in_report_json_and_html(tmp_path):
    run, items = make_run(tmp_path / "run")
    report = build_report(run, n_boot=50, seed=0)
    fidelity = strict_loads((run / "report.json").read_text())["fidelity"]
    student, teacher = _rows(run, "student"), _rows(run, "teacher")
    probs = {name: {i: np.array([float(r[f"prob_{c}"]) for c in CLASSES]) for i, r in rows.items()}
             for name, rows in (("student", student), ("teacher", teacher))}
    ids = sorted(student)
    agree = np.mean([probs["student"][i].argmax() == probs["teacher"][i].argmax() for i in ids])
    kl = np.mean([entropy(probs["teacher"][i], probs["student"][i]) for i in ids])
    assert fidelity["agreement"]["value"] == pytest.approx(agree)
    assert fidelity["kl"]["value"] == pytest.approx(kl)
    assert fidelity["n_images"] == len(items)
    lo, hi = fidelity["agreement"]["ci95"]
    assert lo <= agree <= hi
    assert set(fidelity["agreement_per_class"]) == set(CLASSES)
    t_only = sum(teacher[i]["target"] == CLASSES[probs["teacher"][i].argmax()] != CLASSES[probs["student"][i].argmax()]
                 for i in ids)
    assert fidelity["teacher_right_student_wrong"]["count"] == t_only
    assert any("no-KD baseline" in note for note in fidelity["diagnosis"])
    comparison = report["comparisons"]["student_vs_baseline"]["metrics"]["accuracy"]
    assert fidelity["kd_vs_baseline"]["ci95"] == comparison["ci95"]
    assert fidelity["kd_vs_baseline"]["verdict"] == ("better" if comparison["ci95"][0] > 0 else "no clear difference")
    assert fidelity["diagnosis"][0] == fidelity["kd_vs_baseline"]["text"]
    assert report["fidelity"]["agreement"] == fidelity["agreement"]
    assert "Fidelity of the student to its teacher" in (run / "report.html").read_text()


def test_fidelity_says_why_when_the_teacher_is_missing(tmp_path):
    run, _ = make_run(tmp_path / "run", models=("student", "baseline"))
    fidelity = build_report(run, n_boot=0)["fidelity"]
    assert fidelity["pairs"]["student_vs_teacher"]["available"] is False
