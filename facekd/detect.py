"""Face boxes for images without one: OpenCV's Viola-Jones Haar cascade, and its box mapped to a landmark box.

The detector is ``cv2.CascadeClassifier`` with the frontal-face cascade shipped in OpenCV 4 wheels
(``cv2.data.haarcascades``; the project pins ``opencv-python-headless>=4.9,<5`` because OpenCV 5 dropped
both). The landmark models are trained on crops around the ground-truth landmarks' bounding box, which is
not the box a detector returns; :func:`landmark_box_from_detection` maps one onto the other.

Example:
    >>> import numpy as np
    >>> detect_faces(np.full((120, 160), 127, np.uint8))
    []
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from kdcore.errors import DataError, KDError

__all__ = ["cascade_path", "detect_faces", "landmark_box_from_detection", "CASCADE_NAME",
           "DETECTION_TO_LANDMARK_BOX", "FaceCandidate", "face_candidates", "best_face", "SIZE_WEIGHT"]

Box = tuple[float, float, float, float]

CASCADE_NAME = "haarcascade_frontalface_default.xml"

# How the cascade's square box relates to the 68-point landmark bounding box, estimated once on the 50 real
# LFPW test faces of ../shared/fixtures/faces-lfpw (300-W annotations): per image, the largest detection of
# detect_faces() (the face in 49 of 50) against the box of its ground-truth points. Medians (quartiles) of
# (landmark centre - detection centre) / detection side: x 0.011 (-0.053, 0.051), y 0.151 (0.140, 0.178);
# landmark width / side 0.836 (0.801, 0.871), height / side 0.824 (0.792, 0.877). dx is set to 0 (faces
# are mirror-symmetric). Schemes without a jaw contour (COFW's 29 points) have a narrower landmark box.
DETECTION_TO_LANDMARK_BOX = {"dx": 0.0, "dy": 0.15, "width": 0.84, "height": 0.82}


def cascade_path() -> Path:
    """Where OpenCV keeps the frontal-face cascade (``cv2.data.haarcascades``)."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not folder or not hasattr(cv2, "CascadeClassifier"):
        raise KDError(f"OpenCV {cv2.__version__} has no Haar cascades (cv2.data.haarcascades / "
                      "cv2.CascadeClassifier): install opencv-python-headless>=4.9,<5, or pass the face box explicitly")
    return Path(folder) / CASCADE_NAME


@lru_cache(maxsize=2)
def _classifier(path: str) -> "cv2.CascadeClassifier":
    if not Path(path).is_file():
        raise KDError(f"{path}: OpenCV's face cascade file is missing (a broken OpenCV install: reinstall "
                      "opencv-python-headless), or pass the face box explicitly")
    classifier = cv2.CascadeClassifier(path)
    if classifier.empty():
        raise KDError(f"{path}: OpenCV cannot load this face cascade file (reinstall opencv-python-headless)")
    return classifier


def detect_faces(image: np.ndarray, max_side: int = 800, min_neighbors: int = 3,
                 scale_factor: float = 1.1) -> list[Box]:
    """Face boxes ``(x0, y0, x1, y1)`` (0-based pixels of ``image``), largest first.

    Args:
        image: (H, W) greyscale or (H, W, 3) RGB uint8.
        max_side: larger images are shrunk to this longer side first (speed); boxes are mapped back.
        min_neighbors, scale_factor: as in ``cv2.CascadeClassifier.detectMultiScale``.
    """
    gray, shrink = _gray(image, max_side)
    found = _classifier(str(cascade_path())).detectMultiScale(gray, scaleFactor=scale_factor,
                                                               minNeighbors=min_neighbors)
    rects = np.asarray(found, dtype=np.float64).reshape(-1, 4)
    boxes = [(x / shrink, y / shrink, (x + w) / shrink, (y + h) / shrink) for x, y, w, h in rects.tolist()]
    return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)


@dataclass(frozen=True)
class FaceCandidate:
    """One cascade detection with its evidence: ``neighbors`` (how many overlapping raw windows were merged
    into it, ``detectMultiScale2``), ``level_weight`` (the last stage's confidence, ``detectMultiScale3``) and
    ``score``, what :func:`face_candidates` ranks by."""

    box: Box
    neighbors: int
    level_weight: float
    score: float

    def to_dict(self) -> dict:
        return {"box": [round(v, 2) for v in self.box], "face_score": round(self.score, 3),
                "neighbors": self.neighbors, "level_weight": round(self.level_weight, 3)}


# score = ln(neighbors) + SIZE_WEIGHT * ln(side / largest side). Tuned on the 52 real photographs of
# ../shared/fixtures (50 LFPW test faces and 2 of 300-W): the annotated face is chosen in 50 of 52, as with the
# largest box, but the miss on clutter (LFPW image_0210: a 4-neighbour box larger than the 97-neighbour face)
# is gone; the two misses left are a second real face of the same size (image_0168) and a face the cascade
# does not find at all (breakingbad). Level weights did not separate faces from clutter there (a true face at
# 4.2 against clutter at 6.7), and neither score can refuse clutter without refusing real faces (Einstein's
# face has 4 neighbours, as little as the weakest clutter), so every candidate is kept and ranked here; the
# landmark model's evidence and the refusal of clutter are in facekd.face_choice.
SIZE_WEIGHT = 4.0


def face_candidates(image: np.ndarray, max_side: int = 800, min_neighbors: int = 3,
                    scale_factor: float = 1.1) -> list[FaceCandidate]:
    """Every cascade detection with its evidence, best :attr:`FaceCandidate.score` first.

    Example:
        >>> face_candidates(np.full((120, 160), 127, np.uint8))
        []
    """
    gray, shrink = _gray(image, max_side)
    classifier = _classifier(str(cascade_path()))
    rects, neighbors = classifier.detectMultiScale2(gray, scaleFactor=scale_factor, minNeighbors=min_neighbors)
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    if not len(rects):
        return []
    weights = _level_weights(classifier, gray, rects, scale_factor, min_neighbors)
    largest = float(rects[:, 2].max())
    found = []
    for (x, y, w, h), n, weight in zip(rects.tolist(), np.asarray(neighbors).reshape(-1).tolist(), weights):
        score = float(np.log(max(int(n), 1)) + SIZE_WEIGHT * np.log(w / largest))
        found.append(FaceCandidate((x / shrink, y / shrink, (x + w) / shrink, (y + h) / shrink), int(n),
                                   float(weight), score))
    return sorted(found, key=lambda c: (-c.score, -(c.box[2] - c.box[0])))


def _level_weights(classifier, gray: np.ndarray, rects: np.ndarray, scale_factor: float,
                   min_neighbors: int) -> list[float]:
    """The cascade's last-stage weight of each merged box (``detectMultiScale3``), matched by overlap."""
    boxes, _, weights = classifier.detectMultiScale3(gray, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                                     outputRejectLevels=True)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    out = []
    for x, y, w, h in rects:
        overlap = [(min(x + w, bx + bw) - max(x, bx)) * (min(y + h, by + bh) - max(y, by))
                   for bx, by, bw, bh in boxes]
        out.append(float(weights[int(np.argmax(overlap))]) if len(boxes) else float("nan"))
    return out


def _gray(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    if image.ndim == 3 and image.shape[2] == 3:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    elif image.ndim == 2:
        gray = image
    else:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
    if gray.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {gray.dtype}")
    shrink = min(1.0, max_side / max(gray.shape))
    if shrink < 1.0:
        gray = cv2.resize(gray, (round(gray.shape[1] * shrink), round(gray.shape[0] * shrink)),
                          interpolation=cv2.INTER_AREA)
    return gray, shrink


def best_face(image: np.ndarray, source: str | os.PathLike = "the image") -> FaceCandidate:
    """The best-scoring candidate; raises :class:`DataError` ``"no face found in <source>"`` when none."""
    found = face_candidates(image)
    if not found:
        raise DataError(f"no face found in {source} (pass the face box explicitly if the face is there)")
    return found[0]


def landmark_box_from_detection(box: Sequence[float]) -> Box:
    """Map a cascade box onto the landmark bounding box the models were trained around.

    Example:
        >>> landmark_box_from_detection((0, 0, 100, 100))
        (8.0, 24.0, 92.0, 106.0)
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    side = ((x1 - x0) + (y1 - y0)) / 2.0
    cx = (x0 + x1) / 2.0 + DETECTION_TO_LANDMARK_BOX["dx"] * side
    cy = (y0 + y1) / 2.0 + DETECTION_TO_LANDMARK_BOX["dy"] * side
    half_w, half_h = DETECTION_TO_LANDMARK_BOX["width"] * side / 2.0, DETECTION_TO_LANDMARK_BOX["height"] * side / 2.0
    return cx - half_w, cy - half_h, cx + half_w, cy + half_h
