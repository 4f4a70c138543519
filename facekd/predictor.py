"""Facial landmarks with an exported student: numpy, OpenCV and ONNX Runtime (PyTorch optional).

The model sees a square crop around the face's landmark bounding box (plus the recipe's margin) and
returns the K points in crop coordinates divided by the crop size; :class:`LandmarkDetector` maps them
back to the original image's pixels. Without a box, the face is chosen among OpenCV's Haar candidates by
the cascade's evidence and the model's own plausibility (:mod:`facekd.face_choice`), and a candidate that
scores like clutter is refused ("no face found").

Example:
    >>> detector = LandmarkDetector.load("exports/face-student")  # doctest: +SKIP
    >>> points = detector.predict("einstein.jpg")                 # doctest: +SKIP
    >>> points.shape                                              # doctest: +SKIP
    (68, 2)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

import cv2
import numpy as np

from facekd.face_choice import assess_faces
from facekd.geometry import crop_face
from facekd.pts_files import write_pts
from facekd.preprocess import normalize_rgb, to_image_points
from kdcore.atomic import atomic_write_bytes, atomic_write_json
from kdcore.errors import DataError, KDError
from kdcore.export import load_runner
from kdcore.images import read_image

__all__ = ["LandmarkDetector", "predict_files", "load_rgb", "draw_landmarks"]

Backend = Literal["onnx", "torchscript", "torch"]
ImageLike = str | os.PathLike | np.ndarray
Box = tuple[float, float, float, float]


def load_rgb(image: ImageLike) -> np.ndarray:
    """An RGB uint8 (H, W, 3) image from a path (an alpha channel is dropped) or an (H, W[, 3]) array."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, "rgb", allow_alpha=True)
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise DataError(f"image array has dtype {array.dtype}; expected uint8 (0-255)")
    if array.ndim == 2:
        array = cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 8:
        raise DataError(f"image array has shape {array.shape}; expected RGB (H, W, 3) or greyscale (H, W), "
                        "at least 8x8 pixels")
    return array


class LandmarkDetector:
    """An exported landmark model: crop contract + model, on ONNX Runtime by default.

    Attributes:
        n_points: K landmarks per face; ``scheme`` names their layout (``ibug68``, ``wflw98``, ``cofw29``).
        input_size: side of the square crop; ``margin``: context around the landmark box.
        contract: the export's ``model.json``.
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], contract: Mapping[str, Any], backend: str = "onnx"):
        if contract.get("task") != "landmarks" or not contract.get("n_points"):
            raise KDError(f"not a landmark export (task {contract.get('task')!r}, no n_points)")
        spec = contract["input"]
        if spec.get("crop_margin") is None:
            raise KDError("model.json: input.crop_margin missing (the face crop contract of a landmark export)")
        self._run = run
        self.contract = dict(contract)
        self.backend = backend
        self.n_points = int(contract["n_points"])
        self.scheme = contract.get("scheme")
        self.input_size = int(spec["size"])
        self.margin = float(spec["crop_margin"])
        self._mean, self._std = tuple(spec["mean"]), tuple(spec["std"])
        self._flip = contract.get("flip_permutation")

    @classmethod
    def load(cls, path: str | os.PathLike, backend: Backend | None = None, threads: int | None = None,
             device: str = "cpu") -> "LandmarkDetector":
        """Load an export folder (``backend`` picks the file, default ONNX) or a model file with its sidecar.

        ``device``: cpu, cuda, cuda:N or auto (ONNX Runtime's CUDA provider / PyTorch on CUDA when present).
        """
        run, contract, backend, _ = load_runner(path, backend, threads, device)
        return cls(run, contract, backend)

    def face_box(self, image: ImageLike, source: str | os.PathLike | None = None) -> Box:
        """The landmark box of the face chosen by evidence (:func:`facekd.face_choice.assess_faces`);
        :class:`DataError` ``no face found in ...`` if no candidate scores above clutter."""
        where = source or (image if isinstance(image, (str, os.PathLike)) else "the image")
        faces = [f for f in assess_faces(self, load_rgb(image)) if f.accepted]
        if not faces:
            raise DataError(f"no face found in {where} (pass the face box explicitly if the face is there)")
        return faces[0].box

    def crop(self, image: ImageLike, box: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """``(model input (3, S, S), 2x3 original -> crop matrix)`` for the face in ``box``."""
        crop, matrix = crop_face(load_rgb(image), box, self.input_size, self.margin)
        return normalize_rgb(crop, self._mean, self._std), matrix

    def _points(self, batch: np.ndarray) -> np.ndarray:
        """(K, 2) outputs for one input, still divided by the input size."""
        out = np.asarray(self._run(batch), dtype=np.float64)
        if out.shape != (1, 2 * self.n_points):
            raise KDError(f"model output has shape {out.shape}, the contract says (1, {2 * self.n_points})")
        return out.reshape(self.n_points, 2)

    def predict(self, image: ImageLike, box: Sequence[float] | None = None, tta: bool = False) -> np.ndarray:
        """(K, 2) float64 landmarks in the original image's 0-based pixels.

        Args:
            image: a path or an RGB/greyscale uint8 array.
            box: the face's landmark bounding box ``(x0, y0, x1, y1)`` (e.g. from previous points); a face
                detector's box must first go through :func:`facekd.detect.landmark_box_from_detection`.
                None: the face chosen by evidence among the Haar cascade's candidates (:meth:`face_box`).
            tta: average with the prediction on the mirrored crop (left/right points swapped back).
        """
        rgb = load_rgb(image)
        if box is None:
            box = self.face_box(rgb, image if isinstance(image, (str, os.PathLike)) else None)
        if tta and self._flip is None:
            raise KDError("this export has no flip_permutation: flip test-time augmentation is unavailable")
        points, mirrored = self.predict_pair(rgb, box, mirror=tta)
        return (points + mirrored) / 2.0 if tta else points

    def predict_pair(self, image: ImageLike, box: Sequence[float],
                     mirror: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """``(points, points of the mirrored crop flipped back)`` in the original image's pixels; the second is
        None without ``mirror`` or when the export has no ``flip_permutation``."""
        batch, matrix = self.crop(load_rgb(image), box)
        points = self._points(batch[None])
        mirrored = None
        if mirror and self._flip is not None:
            from facekd.augment import hflip_landmarks  # albumentations: imported only when asked for

            size = self.input_size
            flipped = self._points(np.ascontiguousarray(batch[None, :, :, ::-1])) * size
            mirrored = to_image_points((hflip_landmarks(flipped, size, self._flip) / size).reshape(-1), matrix, size)
        return to_image_points(points.reshape(-1), matrix, self.input_size), mirrored


def draw_landmarks(image: np.ndarray, points: np.ndarray, box: Sequence[float] | None = None) -> np.ndarray:
    """A BGR copy of an RGB image with the points (and the box) drawn, for overlay files."""
    canvas = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    radius = max(1, round(max(image.shape[:2]) / 300))
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (255, 160, 0), max(1, radius // 2))
    for x, y in np.asarray(points):
        cv2.circle(canvas, (int(round(x)), int(round(y))), radius, (0, 255, 0), -1, lineType=cv2.LINE_AA)
    return canvas


def predict_files(model: LandmarkDetector | str | os.PathLike, images: Iterable[str | os.PathLike],
                  out_dir: str | os.PathLike, overlay: bool = False, tta: bool = False,
                  all_faces: bool = False) -> list[dict[str, Any]]:
    """Landmarks of the face chosen by evidence in each image (every accepted face with ``all_faces``:
    ``<stem>_face<k>.pts``, best first; :mod:`facekd.face_choice`): ``out_dir/<stem>.pts`` (1-based, iBUG
    format) and, with ``overlay``, ``out_dir/<stem>_landmarks.png``; each record names the chosen box and its
    face score, and ``out_dir/faces.json`` keeps them all. An image with no candidate above clutter gets a
    record with ``pts`` None and ``no_face`` ("no face found in ...") and nothing written; the batch goes on.
    An unreadable image stops with an error naming it; files already written for earlier images stay."""
    detector = model if isinstance(model, LandmarkDetector) else LandmarkDetector.load(model)
    paths = [Path(p) for p in images]
    if not paths:
        raise KDError("no images to process")
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems:
            raise KDError(f"{path} and {stems[path.stem]} would both write {path.stem}.pts; "
                          "rename one or run them separately")
        stems[path.stem] = path
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise KDError(f"{out}: exists and is not a folder (--out takes the folder for the .pts files)")
    out.mkdir(parents=True, exist_ok=True)
    if tta and detector._flip is None:
        raise KDError("this export has no flip_permutation: flip test-time augmentation is unavailable")
    results = []
    for path in paths:
        rgb = load_rgb(path)
        faces = assess_faces(detector, rgb, tta=tta)
        accepted = [f for f in faces if f.accepted]
        if not accepted:
            # one record, no .pts: the batch goes on (as face_alignment and dlib return no face, not an error)
            results.append({"path": str(path), "pts": None, "box": None, "face": None, "candidates": len(faces),
                            "refused": [f.to_dict() for f in faces],
                            "no_face": f"no face found in {path}" + (
                                f" ({len(faces)} candidate(s), each scoring like clutter)" if faces else "")})
            continue
        chosen = accepted if all_faces else accepted[:1]
        for k, face in enumerate(chosen):
            stem = f"{path.stem}_face{k}" if all_faces else path.stem
            box, points = face.box, face.points
            write_pts(out / f"{stem}.pts", points)
            record: dict[str, Any] = {"path": str(path), "pts": str(out / f"{stem}.pts"), "box": box,
                                      "face": face.to_dict(), "candidates": len(faces)}
            if overlay:
                target = out / f"{stem}_landmarks.png"
                ok, encoded = cv2.imencode(".png", draw_landmarks(rgb, points, box))
                if not ok:
                    raise KDError(f"{target}: cannot encode the overlay image")
                atomic_write_bytes(target, encoded.tobytes())
                record["overlay"] = str(target)
            results.append(record)
    _write_faces_json(out / FACES_JSON, results)
    return results


FACES_JSON = "faces.json"


def _write_faces_json(target: Path, records: list[dict[str, Any]]) -> None:
    """The batch's face choices beside the .pts files (chosen box, face score and its evidence per image, or
    "no face found"): the .pts format has no place for them. Files are named, not located (no folder of the
    machine in a file meant to be shared; stems are unique in a batch)."""
    rows = []
    for r in records:
        row = {**r, "path": Path(r["path"]).name, "pts": None if r["pts"] is None else Path(r["pts"]).name,
               "box": None if r["box"] is None else [round(float(v), 2) for v in r["box"]]}
        if "overlay" in row:
            row["overlay"] = Path(row["overlay"]).name
        if row.get("no_face"):
            row["no_face"] = row["no_face"].replace(r["path"], row["path"], 1)
        rows.append(row)
    atomic_write_json(target, {"images": rows}, indent=1)
