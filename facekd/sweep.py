"""What ``facekd sweep`` searches with: the face recipe, its Tough and Tolerant teachers, validation NME."""

from __future__ import annotations

from typing import Any

import numpy as np

from kdcore.sweep import SweepAdapter

__all__ = ["adapter", "OBJECTIVES"]

OBJECTIVES = {"nme": "minimize", "fr": "minimize", "auc": "maximize"}


def _points(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = sorted(rows, key=lambda r: r["id"])
    n_points = sum(1 for k in rows[0] if k.startswith("x") and k[1:].isdigit())
    pred = np.asarray([[[float(r[f"x{i}"]), float(r[f"y{i}"])] for i in range(n_points)] for r in rows])
    truth = np.asarray([[[float(r[f"gx{i}"]), float(r[f"gy{i}"])] for i in range(n_points)] for r in rows])
    return np.asarray([r["id"] for r in rows]), pred, truth


def _score(rows: list[dict], records) -> dict[str, Any]:
    from .metrics import nme
    from .report import landmark_metrics

    _, pred, truth = _points(rows)
    return landmark_metrics(np.asarray(nme(pred, truth)))


def _fidelity(rows: list[dict], teacher_rows: dict[str, list[dict]], records) -> dict[str, Any]:
    from kdcore.fidelity import landmark_fidelity

    from .metrics import normaliser
    from .report import THRESHOLD

    ids, student, truth = _points(rows)
    out: dict[str, Any] = {}
    for name in ("tough", "tolerant"):
        t_ids, teacher, _ = _points(teacher_rows[name])
        if not np.array_equal(ids, t_ids):
            raise ValueError(f"the trial's student and the fold's {name} teacher predicted different faces")
        f = landmark_fidelity(student, teacher, truth, normaliser(truth), ids.tolist(), threshold=THRESHOLD, n_boot=0)
        prefix = "" if name == "tough" else f"{name}_"
        out[f"{prefix}agreement"] = f["agreement"]["value"]
        out[f"{prefix}nme_to_teacher"] = f["nme_to_teacher"]["value"]
    return out


def adapter() -> SweepAdapter:
    from kdcore.vertical import sweep_adapter

    from .config import FaceRecipe
    from .vertical import FACES

    return sweep_adapter(FACES, FaceRecipe, OBJECTIVES, _score, _fidelity)
