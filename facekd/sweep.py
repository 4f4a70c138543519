"""What ``facekd sweep`` searches with: the face recipe, its Tough and Tolerant teachers, validation NME."""

from __future__ import annotations

from typing import Any

import numpy as np

from kdcore.sweep import SweepAdapter

__all__ = ["adapter", "OBJECTIVES"]

OBJECTIVES = {"nme": "minimize", "fr": "minimize", "auc": "maximize"}


def _prepare(recipe, run):
    from .data_prep import build_manifest, prepare_faces

    records, _ = prepare_faces(recipe, run)
    return records, build_manifest(recipe, records)


def _train(role, recipe, records, ctx):
    from .fold_training import train_role

    return train_role(role, recipe, records, ctx)


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


def _build_student(recipe, records):
    from .fold_training import build_regressor, model_meta

    return build_regressor(model_meta(recipe, "student", records[0].n_points, -1, ""))


def _check_models(recipe) -> None:
    from kdcore.models import check_model_choice

    for role in ("tough", "tolerant", "student"):
        cfg = getattr(recipe, role)
        check_model_choice(cfg.model, cfg.weights, key=role, pretrained=cfg.pretrained)


def adapter() -> SweepAdapter:
    from .config import FaceRecipe

    return SweepAdapter(
        tool="facekd", schema=FaceRecipe, objectives=OBJECTIVES, teachers=("tough", "tolerant"),
        trial_sections=("student", "baseline", "report", "runtime", "name"), prepare=_prepare, train=_train,
        score=_score, fidelity=_fidelity, build_student=_build_student,
        input_shape=lambda r: (3, r.data.image_size, r.data.image_size), check_models=_check_models,
        n_folds=lambda r: 1 if r.data.evaluation == "official" else r.cv.folds)
