"""The face report's ``fidelity`` section: student-to-teacher NME and agreement against each teacher."""

import numpy as np
import pytest

from facekd.metrics import normaliser
from facekd.report import build_report, load_landmark_predictions
from kdcore.report import read_run
from tests.facekd.test_report import make_run, strict_loads


def test_fidelity_against_both_teachers(tmp_path):
    run, items = make_run(tmp_path, with_images=False)
    build_report(run, n_boot=40, seed=0)
    fidelity = strict_loads((run / "report.json").read_text())["fidelity"]
    data = read_run(run, ("tough", "tolerant", "student", "baseline"))
    student = load_landmark_predictions(data, "student", 68)
    for name in ("tough", "tolerant"):
        teacher = load_landmark_predictions(data, name, 68)
        expected = np.mean(np.linalg.norm(student.pred - teacher.pred, axis=2).mean(1) / normaliser(student.gt))
        pair = fidelity["pairs"][f"student_vs_{name}"]
        assert pair["nme_to_teacher"]["value"] == pytest.approx(expected)
        assert 0 <= pair["agreement"]["value"] <= 1 and pair["n_images"] == len(items)
    assert fidelity["nme_to_teacher"] == fidelity["pairs"]["student_vs_tough"]["nme_to_teacher"]
    assert "agreement" in fidelity and "kl" in fidelity
    assert "Fidelity of the student to its teacher" in (run / "report.html").read_text()
