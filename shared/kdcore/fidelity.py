"""Fidelity of a student to its teacher, beside the student's accuracy (the two can part ways).

Both verticals' reports and the sweep call these on the same images predicted by both models; the bootstrap
resamples whole groups (patients, subjects), as every interval of the reports does.

Example:
    >>> import numpy as np
    >>> teacher = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    >>> student = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.4, 0.6]])
    >>> f = classification_fidelity(student, teacher, np.array([0, 1, 0, 1]), ["a", "b"], ["p1", "p1", "p2", "p3"],
    ...                             n_boot=0)
    >>> f["agreement"]["value"], f["teacher_right_student_wrong"]["count"], f["student_right_teacher_wrong"]["count"]
    (0.75, 1, 0)
"""

from __future__ import annotations

import html
import math
from typing import Any, Sequence

import numpy as np

from .report.bootstrap import bootstrap_samples, summarize_samples

__all__ = ["classification_fidelity", "landmark_fidelity", "soft_target_entropy", "fidelity_html", "kd_verdict"]
EPS = 1e-12
LEVEL = 0.95


def _kl_per_item(student: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """KL(teacher || student) of each row at T=1, from probabilities."""
    t = np.clip(teacher, EPS, 1.0)
    s = np.clip(student, EPS, 1.0)
    return np.sum(t * (np.log(t) - np.log(s)), axis=1)


def soft_target_entropy(teacher: np.ndarray, temperature: float) -> float:
    """Mean entropy of the teacher's targets softened at ``temperature``, as a share of ``log(n_classes)``.

    Near 1 the soft targets are nearly flat and carry little of the teacher's ranking of the classes (an
    under-confident teacher at a high temperature); near 0 they are one-hot and KD is plain label training.

    >>> round(soft_target_entropy(np.array([[0.5, 0.5]]), 4.0), 3)
    1.0
    """
    logits = np.log(np.clip(teacher, EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    entropy = -np.sum(p * np.log(np.clip(p, EPS, 1.0)), axis=1)
    return float(np.mean(entropy) / math.log(teacher.shape[1]))


def _with_ci(value: float, samples: list[dict], key: str) -> dict[str, Any]:
    intervals, _ = summarize_samples(samples, [key], LEVEL) if samples else ({key: None}, {})
    return {"value": value, "ci95": intervals[key]}


def classification_fidelity(student: np.ndarray, teacher: np.ndarray, targets: np.ndarray, classes: Sequence[str],
                            groups: Sequence[str], n_boot: int = 1000, seed: int = 0,
                            temperature: float | None = None) -> dict[str, Any]:
    """Top-1 agreement, mean KL(teacher || student) at T=1, agreement per true class, and where they part.

    Args:
        student, teacher: class probabilities of the same images, rows in the same order.
        targets: true class index of each image.
        classes: class names in index order.
        groups: the bootstrap unit of each image (patient).
        n_boot: group resamples for the 95% intervals (0: none).
        seed: bootstrap seed.
        temperature: the student's distillation temperature; adds the entropy of the teacher's soft targets.

    Returns:
        ``{n_images, agreement: {value, ci95}, kl: {value, ci95}, agreement_per_class.<class>: {agreement, n},
        teacher_right_student_wrong: {count, share, ci95}, student_right_teacher_wrong: {...},
        soft_target_entropy}``; ``ci95`` of a count is the interval of the count over resamples.
    """
    student, teacher = np.asarray(student, float), np.asarray(teacher, float)
    targets = np.asarray(targets)
    if student.shape != teacher.shape or student.shape[0] != targets.shape[0]:
        raise ValueError(f"student {student.shape}, teacher {teacher.shape} and {targets.shape[0]} targets differ")
    s_pred, t_pred = student.argmax(1), teacher.argmax(1)
    agree = s_pred == t_pred
    kl = _kl_per_item(student, teacher)
    t_only = (t_pred == targets) & (s_pred != targets)
    s_only = (s_pred == targets) & (t_pred != targets)

    def compute(idx: np.ndarray) -> dict[str, float]:
        return {"agreement": float(agree[idx].mean()), "kl": float(kl[idx].mean()),
                "t_only": float(t_only[idx].sum()), "s_only": float(s_only[idx].sum())}

    samples: list[dict] = []
    if n_boot > 0 and len(targets):
        _, samples = bootstrap_samples(compute, len(targets), list(groups), n_boot, seed)
    n = len(targets)
    per_class = {}
    for index, name in enumerate(classes):
        mask = targets == index
        per_class[name] = {"agreement": float(agree[mask].mean()) if mask.any() else None, "n": int(mask.sum())}
    section = {
        "n_images": n, "unit": "patient",
        "agreement": _with_ci(float(agree.mean()), samples, "agreement"),
        "kl": _with_ci(float(kl.mean()), samples, "kl"),
        "agreement_per_class": per_class,
        "teacher_right_student_wrong": {"count": int(t_only.sum()), "share": float(t_only.mean()),
                                        "ci95": _with_ci(0.0, samples, "t_only")["ci95"]},
        "student_right_teacher_wrong": {"count": int(s_only.sum()), "share": float(s_only.mean()),
                                        "ci95": _with_ci(0.0, samples, "s_only")["ci95"]},
    }
    if temperature is not None:
        section["soft_target_entropy"] = {"temperature": temperature,
                                          "value": soft_target_entropy(teacher, temperature)}
    return section


def landmark_fidelity(student: np.ndarray, teacher: np.ndarray, truth: np.ndarray, scale: np.ndarray,
                      groups: Sequence[str], threshold: float = 0.1, n_boot: int = 1000, seed: int = 0
                      ) -> dict[str, Any]:
    """Mean student-to-teacher NME, agreement and where they part, for landmark regressors.

    Args:
        student, teacher, truth: ``(n, points, 2)`` landmarks of the same faces.
        scale: the NME normaliser of each face (e.g. inter-ocular distance of the ground truth).
        groups: the bootstrap unit of each face (subject).
        threshold: the failure threshold of the NME: agreement is the share of faces whose student lies within
            it of the teacher; "right" means an NME to the ground truth below it.

    Returns:
        ``{n_images, nme_to_teacher: {value, ci95}, agreement: {value, ci95, threshold}, kl: None (coordinates,
        not distributions), teacher_right_student_wrong, student_right_teacher_wrong}``.
    """
    student, teacher, truth = (np.asarray(a, float) for a in (student, teacher, truth))
    scale = np.asarray(scale, float)
    if not (student.shape == teacher.shape == truth.shape) or student.shape[0] != scale.shape[0]:
        raise ValueError(f"landmark arrays differ: {student.shape}, {teacher.shape}, {truth.shape}, {scale.shape}")

    def per_face(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.linalg.norm(a - b, axis=2).mean(axis=1) / scale

    to_teacher = per_face(student, teacher)
    student_ok, teacher_ok = per_face(student, truth) < threshold, per_face(teacher, truth) < threshold
    agree = to_teacher < threshold
    t_only, s_only = teacher_ok & ~student_ok, student_ok & ~teacher_ok

    def compute(idx: np.ndarray) -> dict[str, float]:
        return {"nme": float(to_teacher[idx].mean()), "agreement": float(agree[idx].mean()),
                "t_only": float(t_only[idx].sum()), "s_only": float(s_only[idx].sum())}

    samples: list[dict] = []
    if n_boot > 0 and len(scale):
        _, samples = bootstrap_samples(compute, len(scale), list(groups), n_boot, seed)
    return {
        "n_images": int(len(scale)), "unit": "subject",
        "nme_to_teacher": _with_ci(float(to_teacher.mean()), samples, "nme"),
        "agreement": {**_with_ci(float(agree.mean()), samples, "agreement"), "threshold": threshold},
        "kl": None, "kl_note": "landmarks are coordinates, not class distributions: no KL",
        "teacher_right_student_wrong": {"count": int(t_only.sum()), "share": float(t_only.mean()),
                                        "ci95": _with_ci(0.0, samples, "t_only")["ci95"]},
        "student_right_teacher_wrong": {"count": int(s_only.sum()), "share": float(s_only.mean()),
                                        "ci95": _with_ci(0.0, samples, "s_only")["ci95"]},
    }


def kd_verdict(comparison: dict | None, metric: str, higher_is_better: bool, scale: float = 1.0,
               unit: str = "") -> dict[str, Any]:
    """Did the KD student beat the no-KD baseline? From the report's paired comparison ``student_vs_baseline``:
    better (or worse) only when the whole paired 95% interval of the difference is on that side of zero.

    >>> kd_verdict({"available": True, "metrics": {"accuracy": {"difference": 0.04, "ci95": [0.01, 0.07]}}},
    ...            "accuracy", True)["verdict"]
    'better'
    """
    if not comparison or not comparison.get("available"):
        return {"metric": metric, "verdict": "unknown", "text": "KD student vs no-KD baseline: not available"}
    entry = comparison["metrics"][metric]
    diff, ci = entry.get("difference"), entry.get("ci95")
    verdict = "no clear difference"
    if diff is not None and ci:
        gain = (ci[0] > 0) if higher_is_better else (ci[1] < 0)
        loss = (ci[1] < 0) if higher_is_better else (ci[0] > 0)
        verdict = "better" if gain else "worse" if loss else verdict
    shown = (f"{diff * scale:+.2f}{unit} [{ci[0] * scale:+.2f}, {ci[1] * scale:+.2f}]" if diff is not None and ci
             else "n/a")
    text = (f"KD student vs no-KD baseline, {metric} difference {shown} (paired 95% interval): "
            + {"better": "the KD student beat the baseline",
               "worse": "the KD student did worse than the baseline",
               "no clear difference": "no clear difference: the interval includes zero"}[verdict])
    return {"metric": metric, "difference": diff, "ci95": ci, "verdict": verdict, "text": text}


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _ci(entry: dict) -> str:
    ci = entry.get("ci95")
    return f"{_fmt(entry.get('value'))}" + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "")


def fidelity_html(fidelity: dict[str, Any]) -> str:
    """A report section: one row per (student, teacher) pair of ``report.json``'s ``fidelity``."""
    rows = []
    for pair, f in (fidelity.get("pairs") or {}).items():
        if not f.get("available", True):
            rows.append(f"<tr><td>{html.escape(pair)}</td><td colspan=5>{html.escape(str(f.get('reason')))}</td></tr>")
            continue
        kl = _ci(f["kl"]) if isinstance(f.get("kl"), dict) else _ci(f.get("nme_to_teacher") or {}) + " (NME)"
        parts = [html.escape(pair), _ci(f["agreement"]), kl, str(f["n_images"]),
                 f"{f['teacher_right_student_wrong']['count']} {_fmt_counts(f['teacher_right_student_wrong'])}",
                 f"{f['student_right_teacher_wrong']['count']} {_fmt_counts(f['student_right_teacher_wrong'])}"]
        rows.append("<tr>" + "".join(f"<td>{p}</td>" for p in parts) + "</tr>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in fidelity.get("diagnosis", []))
    return ("<h2>Fidelity of the student to its teacher</h2><p class=\"muted\">Test images predicted by both; "
            "95% intervals by resampling " + html.escape(str(fidelity.get("unit", "groups"))) + "s. Accuracy and "
            "fidelity can part ways: a student may beat its teacher where it disagrees with it.</p>"
            "<table><tr><th>student vs teacher</th><th>top-1 agreement</th><th>KL(teacher||student), T=1 "
            "(faces: student-to-teacher NME)</th><th>images</th><th>teacher right, student wrong</th>"
            "<th>student right, teacher wrong</th></tr>" + "".join(rows) + "</table>"
            + (f"<ul class=\"note\">{notes}</ul>" if notes else ""))


def _fmt_counts(entry: dict) -> str:
    ci = entry.get("ci95")
    return f"[{ci[0]:.0f}, {ci[1]:.0f}]" if ci else ""
