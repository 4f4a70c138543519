"""What ``medkd sweep`` searches with: the OCT recipe, its one teacher, and validation metrics of a trial."""

from __future__ import annotations

from typing import Any

import numpy as np

from kdcore.sweep import SweepAdapter

__all__ = ["adapter", "OBJECTIVES"]

# Validation metrics a sweep can optimise (``balanced_accuracy`` is the macro sensitivity).
OBJECTIVES = {"accuracy": "maximize", "balanced_accuracy": "maximize", "auc": "maximize", "f1": "maximize",
              "ece": "minimize"}


def _arrays(rows: list[dict], classes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = sorted(rows, key=lambda r: r["id"])
    ids = np.asarray([r["id"] for r in rows])
    targets = np.asarray([classes.index(r["target"]) for r in rows])
    probs = np.asarray([[float(r[f"prob_{c}"]) for c in classes] for r in rows], dtype=float)
    return ids, targets, probs


def _score(rows: list[dict], dataset) -> dict[str, Any]:
    from .metrics import classification_metrics

    _, targets, probs = _arrays(rows, dataset.classes)
    m = classification_metrics(targets, probs, dataset.classes)
    return {"accuracy": m["accuracy"], "balanced_accuracy": m["sensitivity"], "auc": m["auc"], "f1": m["f1"],
            "ece": m["ece"]}


def _fidelity(rows: list[dict], teacher_rows: dict[str, list[dict]], dataset) -> dict[str, Any]:
    from kdcore.fidelity import classification_fidelity

    ids, targets, student = _arrays(rows, dataset.classes)
    t_ids, _, teacher = _arrays(teacher_rows["teacher"], dataset.classes)
    if not np.array_equal(ids, t_ids):
        raise ValueError("the trial's student and the fold's teacher predicted different validation images")
    f = classification_fidelity(student, teacher, targets, dataset.classes, ids.tolist(), n_boot=0)
    return {"agreement": f["agreement"]["value"], "kl": f["kl"]["value"],
            "teacher_right_student_wrong": f["teacher_right_student_wrong"]["count"],
            "student_right_teacher_wrong": f["student_right_teacher_wrong"]["count"]}


def adapter() -> SweepAdapter:
    from kdcore.vertical import sweep_adapter

    from .config import OCTRecipe
    from .vertical import OCT

    return sweep_adapter(OCT, OCTRecipe, OBJECTIVES, _score, _fidelity)
