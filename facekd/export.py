"""Export trained landmark students: ONNX and TorchScript, verified, with a model card.

The skeleton (fold choice, parity, int8, completion marker) is :mod:`kdcore.export.run_export`'s; this module
declares what is face-specific: the crop contract, real face crops for the checks, the int8 NME gate and the
model card.

Each export folder::

    model.onnx  model.ts  model.safetensors  model.json (contract)  parity.json  MODEL_CARD.md
    model.int8.onnx (with ``onnx-int8``; ``predict`` then uses it by default)

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
from facekd.geometry import apply_affine, box_from_landmarks, crop_face
from facekd.metrics import nme
from facekd.pts_files import read_pts
from facekd.preprocess import normalize_rgb
from facekd.schemes import get_scheme
from kdcore.errors import DataError, KDError
from kdcore.export import (pick_items, read_run_file, report_means, run_data_root, run_items, run_source, RunModel,
                           SIDECAR_FORMAT, SIDECAR_VERSION)
from kdcore.export import run_export
from kdcore.export.run_export import Exporter
from kdcore.images import ImageReadError, read_image
from kdcore.modelcard import (data_section, folds_section, latency_section, metrics_section, parity_section,
                              render_model_card, source_section)
from kdcore.seeding import derive_seed

__all__ = ["export_run", "export_fold", "face_contract", "parity_inputs", "int8_nme", "FaceExporter",
           "FACE_EXPORTER", "FORMATS"]

FORMATS = ("onnx", "torchscript", "onnx-int8")
PREFERRED_METRICS = ("nme", "nme_inter_ocular", "nme_inter_pupil", "fr", "failure_rate", "auc")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


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


def _face_crops(entry: RunModel, contract: dict[str, Any], n: int,
                part: str) -> tuple[list[tuple[np.ndarray, Path, np.ndarray | None]], list[str], bool]:
    """Up to ``n`` normalised crops of the run's images (the fold's ``part`` subjects first), each with its file
    and its landmarks in normalised crop coordinates (None without annotation); the unreadable; whether the fold's
    subjects were found."""
    spec = contract["input"]
    size, margin = int(spec["size"]), float(spec["crop_margin"])
    root = run_data_root(entry.run_dir)
    items = run_items(entry.run_dir)
    manifest = read_run_file(entry.run_dir, "folds.json") or {}
    wanted = next((f.get(part) for f in manifest.get("folds", []) if f.get("fold") == entry.fold), None)
    crops, skipped = [], []
    if root is None or not items:
        return crops, skipped, wanted is not None
    for item in pick_items(items, 4 * n, groups=wanted, group_key="subject", label_key="subset"):
        relative = item.get("path") or item.get("image")
        if not relative or len(crops) >= n or not str(relative).lower().endswith(IMAGE_SUFFIXES):
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
        crop, matrix = crop_face(image, box, size, margin)
        target = None if points is None else apply_affine(points, matrix) / size
        crops.append((normalize_rgb(crop, spec["mean"], spec["std"]), path, target))
    return crops, skipped, wanted is not None


def parity_inputs(entry: RunModel, contract: dict[str, Any], n: int = 8,
                  part: str = "test") -> tuple[np.ndarray, list[Path], str, str]:
    """Face crops for the parity checks: real images of the run (the fold's ``part`` subjects first), cropped
    around their landmarks (or a detected face); synthetic crops only when the data cannot be read."""
    spec = contract["input"]
    crops, skipped, in_fold = _face_crops(entry, contract, n, part)
    if crops:
        note = f"{len(crops)} face crops of dataset.json images" + (f" from the fold's {part} subjects"
                                                                    if in_fold else "")
        if skipped:
            note += f"; {len(skipped)} unreadable skipped ({skipped[0]})"
        return np.stack([c for c, _, _ in crops]), [f for _, f, _ in crops], "real", note
    root, items = run_data_root(entry.run_dir), run_items(entry.run_dir)
    why = ("config.yaml has no reachable data.root" if root is None else
           "dataset.json is missing or empty" if not items else "no listed image could be read")
    size = int(spec["size"])
    rng = np.random.default_rng(derive_seed("export-parity", entry.run_dir.name, entry.fold))
    synthetic = [rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8) for _ in range(n)]
    return (np.stack([normalize_rgb(c, spec["mean"], spec["std"]) for c in synthetic]), [], "synthetic",
            f"synthetic noise crops: {why}")


def int8_nme(entry: RunModel, contract: dict[str, Any], n: int) -> tuple[np.ndarray, Any, str]:
    """Annotated crops of the fold's test subjects and ``nme(outputs)``: mean inter-ocular NME in points (%)."""
    crops = [c for c in _face_crops(entry, contract, n, "test")[0] if c[2] is not None]
    if not crops:
        raise KDError(f"{entry.run_dir}: onnx-int8 needs annotated images of the run to check the int8 model's NME "
                      "(dataset.json lists none that can be read)")
    inputs, truth = np.stack([c for c, _, _ in crops]), np.stack([t for _, _, t in crops])

    def nme_points(outputs: np.ndarray) -> float:
        return 100.0 * float(np.mean(nme(np.asarray(outputs, np.float64).reshape(truth.shape), truth)))

    return inputs, nme_points, f"{len(crops)} annotated face crops of the fold's test subjects"


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


class FaceExporter(Exporter):
    formats = FORMATS
    classification = False

    def contract(self, entry: RunModel) -> dict[str, Any]:
        return face_contract(entry)

    def parity_inputs(self, entry: RunModel, contract: dict[str, Any], n: int = 8,
                      part: str = "test") -> tuple[np.ndarray, list[Path], str, str]:
        return parity_inputs(entry, contract, n, part)

    def int8_nme(self, entry: RunModel, contract: dict[str, Any], n: int) -> tuple[np.ndarray, Any, str]:
        return int8_nme(entry, contract, n)

    def card(self, entry: RunModel, contract: dict[str, Any], result: dict[str, Any]) -> str:
        return _card(entry, contract, result)


FACE_EXPORTER = FaceExporter()


def export_fold(entry: RunModel, out_dir: str | os.PathLike, formats: Iterable[str] | str = ("onnx", "torchscript"),
                n_inputs: int = 8) -> dict[str, Any]:
    """Export one fold's model into ``out_dir`` (see :func:`export_run`)."""
    return run_export.export_fold(FACE_EXPORTER, entry, out_dir, formats, n_inputs)


def export_run(run_dir: str | os.PathLike, folds: int | Sequence[int] | str | None = None,
               formats: Iterable[str] | str = ("onnx", "torchscript"), out_dir: str | os.PathLike | None = None,
               model: str = "student", n_inputs: int = 8, int8_gate: float | None = None) -> dict[str, Any]:
    """Export a run's trained landmark model (default the student); see
    :func:`kdcore.export.run_export.export_run`. ``formats``: ``onnx``, ``torchscript``, ``onnx-int8`` (kept only
    when its NME on the fold's test subjects is at most 0.1 points above the float32 model's)."""
    return run_export.export_run(FACE_EXPORTER, run_dir, folds, formats, out_dir, model, n_inputs, int8_gate)
