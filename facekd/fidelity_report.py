"""The ``fidelity`` section of a facekd report: how closely the student follows each teacher on the test faces
(mean student-to-teacher NME, agreement within the failure threshold, where they part)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kdcore.fidelity import kd_verdict, landmark_fidelity

from .metrics import normaliser

__all__ = ["fidelity_section"]
TEACHERS = ("tough", "tolerant")


def fidelity_section(data: dict, report: dict, threshold: float, n_boot: int, seed: int) -> dict[str, Any]:
    """``data``: the report's LandmarkPredictions by model name. The top-level figures are against the Tough
    teacher (trained on the ground truth); every teacher is under ``pairs``."""
    section: dict[str, Any] = {"student": "student", "teacher": "tough", "unit": "subject", "pairs": {},
                               "diagnosis": []}
    for name in TEACHERS:
        key = f"student_vs_{name}"
        if "student" not in data or name not in data:
            section["pairs"][key] = {"available": False, "reason": f"the student or {name} has no completed fold"}
            continue
        student, teacher = data["student"], data[name]
        common = np.intersect1d(student.ids, teacher.ids)
        s, t = student.subset(np.isin(student.ids, common)), teacher.subset(np.isin(teacher.ids, common))
        section["pairs"][key] = landmark_fidelity(s.pred, t.pred, s.gt, normaliser(s.gt), s.subjects.tolist(),
                                                  threshold=threshold, n_boot=n_boot, seed=seed)
    primary = section["pairs"]["student_vs_tough"]
    if primary.get("available", True):
        section.update({k: primary[k] for k in ("n_images", "nme_to_teacher", "agreement", "kl", "kl_note",
                                                "teacher_right_student_wrong", "student_right_teacher_wrong")})
    section["kd_vs_baseline"] = kd_verdict(report["comparisons"].get("student_vs_baseline"), "nme", False,
                                           scale=100, unit=" points")
    section["diagnosis"] = [section["kd_vs_baseline"]["text"], *_diagnosis(report["models"])]
    return section


def _diagnosis(models: dict) -> list[str]:
    def nme(name: str) -> float | None:
        return ((models.get(name) or {}).get("summary", {}).get("nme") or {}).get("pooled")

    notes = []
    baseline = nme("baseline")
    for name in TEACHERS:
        teacher = nme(name)
        if teacher is None or baseline is None:
            continue
        lead = baseline - teacher
        verdict = ("ahead of the student trained alone: it has something to teach" if lead >= 0.01 else
                   "not clearly ahead of the student trained alone: it has little to teach")
        notes.append(f"{name} NME {teacher:.2%} vs no-KD baseline {baseline:.2%} ({lead * 100:+.2f} points): {verdict}")
    return notes
