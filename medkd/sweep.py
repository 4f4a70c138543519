"""What ``medkd sweep`` searches with: the OCT recipe, its one teacher, and validation metrics of a trial."""

from __future__ import annotations

from typing import Any

import numpy as np

from kdcore.sweep import SweepAdapter

__all__ = ["adapter", "OBJECTIVES"]

# Validation metrics a sweep can optimise (``balanced_accuracy`` is the macro sensitivity).
OBJECTIVES = {"accuracy": "maximize", "balanced_accuracy": "maximize", "auc": "maximize", "f1": "maximize",
              "ece": "minimize"}


def _prepare(recipe, run):
    from .data_prep import prepare_dataset
    from .pipeline import build_manifest

    dataset = prepare_dataset(recipe, run)
    return dataset, build_manifest(recipe, dataset)


def _train(role, recipe, dataset, ctx):
    from .fold_training import train_role

    return train_role(role, recipe, dataset, ctx)


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


def _build_student(recipe, dataset):
    from .fold_training import build_classifier, model_meta

    return build_classifier(model_meta(recipe, "student", dataset.classes, -1, ""))


def _check_models(recipe) -> None:
    from kdcore.models import check_model_choice

    for role, cfg in (("teacher", recipe.teacher), ("student", recipe.student)):
        check_model_choice(cfg.model, cfg.weights, key=role, pretrained=cfg.pretrained)


def adapter() -> SweepAdapter:
    from .config import OCTRecipe

    return SweepAdapter(
        tool="medkd", schema=OCTRecipe, objectives=OBJECTIVES, teachers=("teacher",),
        trial_sections=("student", "baseline", "report", "runtime", "name"), prepare=_prepare, train=_train,
        score=_score, fidelity=_fidelity, build_student=_build_student,
        input_shape=lambda r: (1, r.data.image_size, r.data.image_size), check_models=_check_models,
        n_folds=lambda r: 1 if r.data.evaluation == "official_test" else r.cv.folds)
