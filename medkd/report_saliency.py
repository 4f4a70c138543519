"""Grad-CAM examples for the report: a few correct and misclassified test B-scans of each class, per the student.

For each true class, the most confident correct and the most confident wrong test predictions of the student
(pooled over folds) are explained by the fold model that made them, on the B-scan as the run read it (image files
or frames of volume files). Nothing is shown when the run's data or weights are not reachable; the report then
says why instead.

Example:
    >>> gallery = saliency_gallery("runs/demo/oct", per_class=1)  # doctest: +SKIP
    >>> [(g["true"], g["predicted"]) for g in gallery["items"]]   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import cv2

from kdcore.errors import KDError
from kdcore.images import ImageReadError, read_image

__all__ = ["saliency_gallery"]


def _test_predictions(run_dir: Path) -> list[dict[str, str]]:
    rows = []
    for path in sorted(run_dir.glob("folds/fold_*/student/predictions.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            rows.extend(csv.DictReader(f))
    return rows


def _confidence(row: dict[str, str]) -> float:
    try:
        return float(row.get(f"prob_{row['pred']}", "nan"))
    except ValueError:
        return float("nan")


def saliency_gallery(run_dir: str | os.PathLike, per_class: int = 1, max_side: int = 320) -> dict[str, Any]:
    """``{"items": [{true, predicted, confidence, fold, id, png}], "note": str | None}`` (``png`` bytes)."""
    from kdcore.export import find_run_models, load_run_model, run_data_root, run_items

    from .data.volumes import read_frame

    try:
        from .saliency import gradcam_maps, overlay
        import pytorch_grad_cam  # noqa: F401 - the optional clinic extra
    except ImportError as exc:
        return {"items": [], "note": f"grad-cam is not installed ({exc}); pip install 'kdvision[clinic]'"}

    run_dir = Path(run_dir)
    rows = _test_predictions(run_dir)
    if not rows:
        return {"items": [], "note": "no student test predictions"}
    root = run_data_root(run_dir)
    items = {item.get("id"): item for item in run_items(run_dir)}
    if root is None or not items:
        return {"items": [], "note": "the run's data folder or dataset.json is not reachable from here"}
    try:
        models = find_run_models(run_dir, "student")
    except KDError as exc:
        return {"items": [], "note": str(exc)}
    chosen = []
    for cls in dict.fromkeys(r["target"] for r in rows):
        of_class = sorted((r for r in rows if r["target"] == cls), key=_confidence, reverse=True)
        chosen += [r for r in of_class if r["pred"] == cls][:per_class]
        chosen += [r for r in of_class if r["pred"] != cls][:per_class]
    out, skipped = [], []
    loaded: dict[int, Any] = {}
    for row in chosen:
        fold, item = int(row["fold"]), items.get(row["id"])
        if fold not in models or item is None:
            skipped.append(row["id"])
            continue
        try:
            path = root / str(item.get("path") or item["id"])
            gray = read_image(path, "gray") if item.get("frame") is None else read_frame(path, int(item["frame"]))
        except ImageReadError:
            skipped.append(row["id"])
            continue
        if fold not in loaded:
            loaded[fold] = load_run_model(models[fold])
        spec = models[fold].meta.get("input") or {}
        classes = list(models[fold].meta.get("classes") or [])
        target = classes.index(row["pred"]) if row["pred"] in classes else None
        cam = gradcam_maps(loaded[fold], [gray], int(spec["size"]), None if target is None else [target],
                           spec.get("mean", (0.449,)), spec.get("std", (0.226,)))[0]
        picture = overlay(gray, cam)
        scale = max_side / max(picture.shape[:2])
        if scale < 1:
            picture = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ok, png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        if ok:
            out.append({"true": row["target"], "predicted": row["pred"], "confidence": _confidence(row),
                        "fold": fold, "id": row["id"], "png": png.tobytes()})
    note = f"{len(skipped)} chosen B-scan(s) could not be read and are not shown" if skipped else None
    return {"items": out, "note": note}
