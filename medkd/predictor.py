"""Classify OCT B-scans with an exported student: numpy, OpenCV and ONNX Runtime (PyTorch optional).

The export folder (``medkd export``) holds ``model.onnx`` / ``model.ts`` / ``model.safetensors`` and the
``model.json`` sidecar with the preprocessing contract; :func:`medkd.preprocess.preprocess` applies it.

Example:
    >>> clf = OCTClassifier.load("exports/oct-student")           # doctest: +SKIP
    >>> clf.predict("CNV-1016042-1.jpeg")                         # doctest: +SKIP
    {'CNV': 0.93, 'DME': 0.02, 'DRUSEN': 0.04, 'NORMAL': 0.01}
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

import cv2
import numpy as np

from kdcore.atomic import atomic_open
from kdcore.errors import DataError, KDError
from kdcore.export import load_runner
from kdcore.images import read_image
from medkd.preprocess import preprocess

__all__ = ["OCTClassifier", "predict_files", "load_gray", "softmax"]

Backend = Literal["onnx", "onnx-int8", "torchscript", "torch"]
ImageLike = str | os.PathLike | np.ndarray


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def load_gray(image: ImageLike) -> np.ndarray:
    """A greyscale uint8 (H, W) B-scan from a path (any 8-bit format; colour is converted) or an array.

    Arrays: (H, W), (H, W, 1) or RGB (H, W, 3) uint8; anything else is a :class:`DataError` with the shape.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, "gray")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise DataError(f"image array has dtype {array.dtype}; expected uint8 (0-255)")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    elif array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2GRAY)
    if array.ndim != 2 or min(array.shape) < 8:
        raise DataError(f"image array has shape {array.shape}; expected a greyscale (H, W) B-scan "
                        f"(or (H, W, 1) / RGB (H, W, 3)), at least 8x8 pixels")
    return array


class OCTClassifier:
    """An exported OCT classifier: preprocessing contract + model, on ONNX Runtime by default.

    Attributes:
        classes: class names in output order.
        input_size: side of the square model input.
        backend: ``"onnx"``, ``"onnx-int8"``, ``"torchscript"`` or ``"torch"``.
        contract: the export's ``model.json``.
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], contract: Mapping[str, Any], backend: str = "onnx"):
        if contract.get("task") != "classification" or not contract.get("classes"):
            raise KDError(f"not an OCT classification export (task {contract.get('task')!r}, no classes)")
        spec = contract["input"]
        if spec.get("resize", "letterbox") != "letterbox" or int(spec.get("channels", 1)) != 1:
            raise KDError(f"unsupported input contract {dict(spec)} (letterboxed greyscale expected)")
        self._run = run
        self.contract = dict(contract)
        self.backend = backend
        self.classes: list[str] = list(contract["classes"])
        self.input_size = int(spec["size"])
        self._mean, self._std = tuple(spec["mean"]), tuple(spec["std"])

    @classmethod
    def load(cls, path: str | os.PathLike, backend: Backend | None = None, threads: int | None = None,
             device: str = "cpu") -> "OCTClassifier":
        """Load an export folder (``backend`` picks the file, default the int8 ONNX model when there, else ONNX)
        or a model file with its sidecar.

        ``device``: cpu, cuda, cuda:N or auto (ONNX Runtime's CUDA provider / PyTorch on CUDA when present).
        """
        run, contract, backend, _ = load_runner(path, backend, threads, device)
        return cls(run, contract, backend)

    def preprocess(self, image: ImageLike) -> np.ndarray:
        """The (1, S, S) float32 model input of one B-scan (letterbox + normalise, the training contract)."""
        return preprocess(load_gray(image), self.input_size, self._mean, self._std)

    def predict_proba(self, images: Sequence[ImageLike], tta: bool = False, batch_size: int = 16) -> np.ndarray:
        """(N, C) class probabilities. ``tta`` averages them with those of the horizontally mirrored input."""
        out = []
        for start in range(0, len(images), batch_size):
            batch = np.stack([self.preprocess(image) for image in images[start:start + batch_size]])
            probs = softmax(self._run(batch))
            if tta:
                probs = (probs + softmax(self._run(np.ascontiguousarray(batch[..., ::-1])))) / 2.0
            out.append(probs)
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def predict(self, image: ImageLike, tta: bool = False) -> dict[str, float]:
        """Class -> probability for one B-scan (path or array)."""
        return dict(zip(self.classes, self.predict_proba([image], tta)[0].tolist()))

    def predict_batch(self, images: Sequence[ImageLike], tta: bool = False,
                      batch_size: int = 16) -> list[dict[str, float]]:
        return [dict(zip(self.classes, row.tolist())) for row in self.predict_proba(images, tta, batch_size)]


def predict_files(model: OCTClassifier | str | os.PathLike, images: Iterable[str | os.PathLike],
                  out_csv: str | os.PathLike, tta: bool = False, batch_size: int = 16) -> list[dict[str, Any]]:
    """Classify image files and write ``path, class, prob_<CLASS>...`` rows to ``out_csv`` (atomically).

    An unreadable image stops the run with an error naming it (no partial CSV is left behind).
    """
    if Path(out_csv).is_dir():
        raise KDError(f"{out_csv}: is a folder; --out takes the CSV file to write")
    classifier = model if isinstance(model, OCTClassifier) else OCTClassifier.load(model)
    paths = [str(p) for p in images]
    if not paths:
        raise KDError("no images to classify")
    probs = classifier.predict_proba(paths, tta=tta, batch_size=batch_size)
    columns = ["path", "class"] + [f"prob_{c}" for c in classifier.classes]
    rows = []
    for path, row in zip(paths, probs):
        record: dict[str, Any] = {"path": path, "class": classifier.classes[int(row.argmax())]}
        record.update({f"prob_{c}": float(p) for c, p in zip(classifier.classes, row)})
        rows.append(record)
    with atomic_open(out_csv, "w") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for record in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in record.items()})
    return rows
