"""Export trained landmark students: ONNX and TorchScript, verified, with a model card.

Same folder layout and fold choice as :mod:`medkd.export` (``folds=None``: the fold with the best
validation score, lower is better for NME and losses). There is no MONAI bundle for faces.

Each export folder::

    model.onnx  model.ts  model.safetensors  model.json (contract)  parity.json  MODEL_CARD.md

Example:
    >>> summary = export_run("runs/kd-300w", folds=0, out_dir="exports/300w")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from facekd.detect import CASCADE_NAME, DETECTION_TO_LANDMARK_BOX, detect_faces, landmark_box_from_detection
from facekd.geometry import box_from_landmarks, crop_face
from facekd.pts_files import read_pts
from facekd.preprocess import normalize_rgb
from facekd.schemes import get_scheme
from kdcore.errors import DataError, KDError
from kdcore.export import (assert_no_absolute_paths, export_model, find_run_models, load_run_model, parse_formats,
                           pick_items, read_run_file, report_means, run_data_root, run_items, run_source, RunModel,
                           select_folds, SIDECAR_FORMAT, SIDECAR_VERSION, write_export_marker)
from kdcore.images import ImageReadError, read_image
from kdcore.modelcard import (data_section, folds_section, latency_section, metrics_section, parity_section,
                              render_model_card, source_section, write_model_card)
from kdcore.seeding import derive_seed

__all__ = ["export_run", "export_fold", "face_contract", "parity_inputs", "FORMATS"]

FORMATS = ("onnx", "torchscript")
PREFERRED_METRICS = ("nme", "nme_inter_ocular", "nme_inter_pupil", "fr", "failure_rate", "auc")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def _parse_formats(formats: Iterable[str] | str) -> set[str]:
    if "bundle" in (formats.split(",") if isinstance(formats, str) else formats):
        raise KDError("--format bundle: MONAI bundles are for the OCT classifier (medkd); "
                      "landmark models export as onnx and torchscript")
    return parse_formats(formats, FORMATS)


def face_contract(entry: RunModel) -> dict[str, Any]:
    """The sidecar: crop contract, output meaning, landmark scheme and flip table, provenance."""
    meta = entry.meta
    spec = dict(meta.get("input") or {})
    missing = [k for k in ("size", "mean", "std", "crop_margin") if k not in spec]
    missing += [] if meta.get("n_points") else ["n_points"]
    if missing:
        raise KDError(f"{entry.weights.with_suffix('.json')}: input contract incomplete, missing {missing}")
    if meta.get("task", "landmarks") != "landmarks":
        raise KDError(f"{entry.weights.with_suffix('.json')}: task {meta.get('task')!r} is not a landmark model")
    n_points = int(meta["n_points"])
    scheme = get_scheme(n_points)
    size, margin = int(spec["size"]), float(spec["crop_margin"])
    spec.update(name="input", layout="NCHW", dtype="float32", channels=3, colour="rgb",
                crop={"box": "bounding box (x0, y0, x1, y1) of the face's landmarks, 0-based pixel centres",
                      "square_side": f"max(w, h) * (1 + 2 * {margin})", "centre": "box centre -> ((S-1)/2, (S-1)/2)",
                      "fill": 0, "interpolation": "bilinear (cv2.warpAffine); INTER_AREA pre-shrink when the crop "
                                                  "is 2x or more smaller than the image"},
                steps=["read as 8-bit RGB", f"crop the square around the landmark box (margin {margin}) to "
                       f"{size}x{size} (facekd.geometry.crop_face)", "x / 255, then (x - mean) / std per channel"])
    config = read_run_file(entry.run_dir, "config.yaml") or {}
    data_cfg = config.get("data", {}) if isinstance(config, dict) else {}
    return {
        "format": SIDECAR_FORMAT, "format_version": SIDECAR_VERSION, "task": "landmarks",
        "domain": "face photographs",
        "arch": meta["arch"], "role": meta.get("role"), "fold": entry.fold, "manifest": meta.get("manifest"),
        "num_outputs": int(meta.get("num_outputs", 2 * n_points)), "in_chans": int(meta.get("in_chans", 3)),
        "n_points": n_points, "scheme": meta.get("scheme", scheme.name),
        "flip_permutation": list(scheme.flip_permutation),
        "data_format": data_cfg.get("format") if isinstance(data_cfg, dict) else None,
        "input": spec,
        "output": {"name": "output", "shape": ["batch", 2 * n_points], "meaning": "landmarks",
                   "layout": "x0, y0, x1, y1, ... in scheme order",
                   "coordinates": "0-based crop pixel coordinates divided by the input size",
                   "to_crop_pixels": "multiply by the input size (facekd.preprocess.to_image_points)",
                   "to_image": "invert the crop's 2x3 affine matrix (facekd.geometry.invert_affine)"},
        "detector": {"cascade": CASCADE_NAME, "scale_factor": 1.1, "min_neighbors": 3, "max_side": 800,
                     "pick": "largest face", "to_landmark_box": dict(DETECTION_TO_LANDMARK_BOX),
                     "to_landmark_box_rule": "side = mean(w, h); centre += (dx, dy) * side; "
                                             "size = (width, height) * side"},
        "tta": {"hflip": "predict(tta=True): mean with the mirrored crop's points, mirrored back and relabelled "
                         "by flip_permutation"},
        "source": run_source(entry),
        "exported": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "intended_use": "research only; not for identification, surveillance or decisions about people",
        "metrics": report_means(entry.run_dir, entry.name),
    }


def _item_points(item: dict[str, Any], image: Path, n_points: int) -> np.ndarray | None:
    for key in ("landmarks", "points"):
        if item.get(key) is not None:
            points = np.asarray(item[key], dtype=np.float64).reshape(-1, 2)
            return points if len(points) == n_points else None
    pts = image.with_suffix(".pts")
    if pts.is_file():
        try:
            return read_pts(pts, n_points)
        except DataError:
            return None
    return None


def parity_inputs(entry: RunModel, contract: dict[str, Any], n: int = 8) -> tuple[np.ndarray, list[Path], str, str]:
    """Face crops for the parity checks: real images of the run (the fold's test subjects first), cropped
    around their landmarks (or a detected face); synthetic crops only when the data cannot be read."""
    spec = contract["input"]
    size, margin = int(spec["size"]), float(spec["crop_margin"])
    root = run_data_root(entry.run_dir)
    items = run_items(entry.run_dir)
    manifest = read_run_file(entry.run_dir, "folds.json") or {}
    test = next((f.get("test") for f in manifest.get("folds", []) if f.get("fold") == entry.fold), None)
    arrays, files, skipped = [], [], []
    if root is not None and items:
        for item in pick_items(items, 4 * n, groups=test, group_key="subject", label_key="subset"):
            relative = item.get("path") or item.get("image")
            if not relative or len(arrays) >= n or not str(relative).lower().endswith(IMAGE_SUFFIXES):
                continue
            path = root / str(relative)
            try:
                image = read_image(path, "rgb", allow_alpha=True)
            except ImageReadError as exc:
                skipped.append(f"{relative}: {exc.reason}")
                continue
            points = _item_points(item, path, contract["n_points"])
            if points is not None:
                box = box_from_landmarks(points)
            elif item.get("box") is not None:
                box = tuple(float(v) for v in item["box"])
            else:
                faces = detect_faces(image)
                whole = (0.0, 0.0, image.shape[1] - 1.0, image.shape[0] - 1.0)
                box = landmark_box_from_detection(faces[0]) if faces else whole
            crop, _ = crop_face(image, box, size, margin)
            arrays.append(normalize_rgb(crop, spec["mean"], spec["std"]))
            files.append(path)
    if arrays:
        note = f"{len(arrays)} face crops of dataset.json images" + (" from the fold's test subjects" if test else "")
        if skipped:
            note += f"; {len(skipped)} unreadable skipped ({skipped[0]})"
        return np.stack(arrays), files, "real", note
    why = ("config.yaml has no reachable data.root" if root is None else
           "dataset.json is missing or empty" if not items else "no listed image could be read")
    rng = np.random.default_rng(derive_seed("export-parity", entry.run_dir.name, entry.fold))
    crops = [rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8) for _ in range(n)]
    return (np.stack([normalize_rgb(c, spec["mean"], spec["std"]) for c in crops]), [], "synthetic",
            f"synthetic noise crops: {why}")


def _card(entry: RunModel, contract: dict[str, Any], result: dict[str, Any]) -> str:
    spec = contract["input"]
    report = read_run_file(entry.run_dir, "report.json")
    summary = (f"A `{contract['arch']}` {entry.name} (fold {entry.fold} of run `{entry.run_dir.name}`) that locates "
               f"{contract['n_points']} facial landmarks ({contract['scheme']}) in a face crop: the square around the "
               f"landmark box with margin {spec['crop_margin']}, resized to {spec['size']}x{spec['size']} RGB. Outputs "
               "are crop coordinates divided by the crop size. Research use only.")
    intended = "\n".join([
        "## Intended use and limits", "",
        "- For research on knowledge distillation for facial landmark localisation.",
        "- Not for identifying people, surveillance, or decisions about people; not a biometric system.",
        "- It needs a face box: with none, OpenCV's Haar cascade (frontal faces only, misses profiles and "
        "low-contrast faces, may fire on textures) picks the largest face; its box is mapped onto a landmark box "
        f"with factors estimated on 50 LFPW faces ({DETECTION_TO_LANDMARK_BOX}). Pass a box for reliable results.",
        "- Accuracy on faces unlike the training data (pose, occlusion, age, ethnicity, image quality) is unknown; "
        "annotation conventions differ between datasets.",
    ])
    usage = "\n".join([
        "## How to use", "",
        "```python", "from facekd.predictor import LandmarkDetector",
        "detector = LandmarkDetector.load('.')     # this folder; ONNX Runtime by default",
        "points = detector.predict('photo.jpg')    # (K, 2) in image pixels, 0-based", "```", "",
        "Without kdvision: crop and normalise as `model.json` describes (`input.crop`, `input.steps`), run "
        "`model.onnx`, multiply the outputs by the input size and map them back with the inverse crop transform.",
    ])
    sections = [source_section(contract["source"]), data_section(entry.run_dir, "subject", "subset", "subjects"),
                folds_section(entry.run_dir, entry.fold, "subjects"),
                metrics_section(report, entry.name, PREFERRED_METRICS, calibration=()),
                parity_section(result["parity"]), latency_section(result["latency"]), intended, usage]
    return render_model_card(f"Model card: facial landmarks {entry.name} ({contract['arch']}), fold {entry.fold}",
                             summary, sections)


def export_fold(entry: RunModel, out_dir: str | os.PathLike, formats: Iterable[str] | str = FORMATS,
                n_inputs: int = 8) -> dict[str, Any]:
    """Export one fold's model into ``out_dir`` (see :func:`export_run`)."""
    formats = _parse_formats(formats)
    out_dir = Path(out_dir)
    model = load_run_model(entry)
    contract = face_contract(entry)
    inputs, _, kind, note = parity_inputs(entry, contract, n_inputs)
    result = export_model(model, inputs, out_dir, contract, formats=formats, classification=False,
                          inputs_kind=kind, note=note, weights=entry.weights)
    write_model_card(out_dir / "MODEL_CARD.md", _card(entry, result["contract"], result))
    result["files"].append("MODEL_CARD.md")
    assert_no_absolute_paths(out_dir, extra=[p for p in (entry.run_dir.resolve(), run_data_root(entry.run_dir)) if p])
    write_export_marker(out_dir)  # last: predict accepts the folder only now
    result.pop("contract")
    return {"fold": entry.fold, "out_dir": str(out_dir), "inputs": kind, "inputs_note": note, **result}


def export_run(run_dir: str | os.PathLike, folds: int | Sequence[int] | str | None = None,
               formats: Iterable[str] | str = FORMATS, out_dir: str | os.PathLike | None = None,
               model: str = "student", n_inputs: int = 8) -> dict[str, Any]:
    """Export a run's trained landmark model (default the student) with verified parity and a model card.

    Args:
        run_dir: the run folder.
        folds: None (the fold with the best validation score), ``"all"``, a fold number or a list of them.
        formats: ``"onnx"`` and/or ``"torchscript"``; ``"bundle"`` is an error (OCT only).
        out_dir: default ``RUN/export/<model>``. One fold is written here, several into ``fold_<k>/``.
        model: which model of the run.
        n_inputs: real face crops used for the parity checks.
    """
    _parse_formats(formats)
    run_dir = Path(run_dir)
    models = find_run_models(run_dir, model)
    chosen = select_folds(models, folds)
    out = Path(out_dir) if out_dir is not None else run_dir / "export" / model
    results = [export_fold(models[k], out if len(chosen) == 1 else out / f"fold_{k}", formats, n_inputs)
               for k in chosen]
    selected = ("best validation score" if folds is None else "all folds" if folds == "all" else "requested")
    return {"run": run_dir.name, "model": model, "selected_by": selected, "out_dir": str(out), "folds": results}
