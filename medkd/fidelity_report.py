"""The ``fidelity`` section of a medkd report: how closely the student follows its teacher on the test images,
with a diagnosis of what the teacher could teach (its lead over the no-KD baseline, its calibration, how flat
its soft targets are at the student's temperature)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kdcore.fidelity import classification_fidelity, kd_verdict

__all__ = ["fidelity_section"]


def fidelity_section(data: dict, classes: list[str], report: dict, config: dict, n_boot: int, seed: int
                     ) -> dict[str, Any]:
    """``data``: the report's ModelPredictions by model name; ``report``: its models section already filled."""
    section: dict[str, Any] = {"student": "student", "teacher": "teacher", "unit": "patient", "pairs": {},
                               "diagnosis": []}
    section["kd_vs_baseline"] = kd_verdict(report["comparisons"].get("student_vs_baseline"), "accuracy", True)
    if "student" not in data or "teacher" not in data:
        section["pairs"]["student_vs_teacher"] = {"available": False,
                                                  "reason": "the student or the teacher has no completed fold"}
        return section
    student, teacher = data["student"], data["teacher"]
    common = np.intersect1d(student.ids, teacher.ids)
    s, t = student.subset(np.isin(student.ids, common)), teacher.subset(np.isin(teacher.ids, common))
    temperature = (config.get("student") or {}).get("temperature")
    pair = classification_fidelity(s.probs, t.probs, s.targets, classes, s.patients.tolist(), n_boot=n_boot,
                                   seed=seed, temperature=temperature)
    section["pairs"]["student_vs_teacher"] = pair
    section.update({k: pair[k] for k in ("n_images", "agreement", "kl", "agreement_per_class",
                                         "teacher_right_student_wrong", "student_right_teacher_wrong")})
    section["diagnosis"] = [section["kd_vs_baseline"]["text"], *_diagnosis(report["models"], pair)]
    return section


def _pooled(models: dict, name: str, metric: str) -> float | None:
    return ((models.get(name) or {}).get("summary", {}).get(metric) or {}).get("pooled")


def _diagnosis(models: dict, pair: dict) -> list[str]:
    notes = []
    teacher, baseline = _pooled(models, "teacher", "accuracy"), _pooled(models, "baseline", "accuracy")
    if teacher is not None and baseline is not None:
        lead = teacher - baseline
        verdict = ("a teacher this far ahead has something to teach" if lead >= 0.05 else
                   "a teacher barely (or not) ahead of the student trained alone has little to teach: a harder "
                   "task, more data or a stronger teacher would give KD room")
        notes.append(f"teacher accuracy {teacher:.3f} vs no-KD baseline {baseline:.3f} ({lead:+.3f}): {verdict}")
    ece = _pooled(models, "teacher", "ece")
    if ece is not None:
        notes.append(f"teacher ECE {ece:.3f}" + (" (poorly calibrated: its soft targets misstate its confidence)"
                                                  if ece > 0.1 else ""))
    entropy = pair.get("soft_target_entropy")
    if entropy:
        flat = entropy["value"] > 0.9
        notes.append(f"teacher soft targets at T={entropy['temperature']:g} carry {entropy['value']:.2f} of the "
                     "maximum entropy" + (": nearly flat, so the KD term mostly pulls the student towards uniform "
                                          "predictions (try a lower temperature or a better-calibrated teacher)"
                                          if flat else ""))
    notes.append(f"the student agrees with the teacher on {pair['agreement']['value']:.1%} of the test images; the "
                 f"teacher alone is right on {pair['teacher_right_student_wrong']['count']}, the student alone on "
                 f"{pair['student_right_teacher_wrong']['count']}")
    return notes
