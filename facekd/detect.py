"""Face boxes for images without one: OpenCV's Viola-Jones Haar cascade, and its box mapped to a landmark box.

OpenCV 5 wheels no longer ship ``cv2.CascadeClassifier`` nor the cascade files. The cascade XML
(``haarcascade_frontalface_default.xml``, Intel licence) is found in this order: the ``cascade`` argument,
the ``KDVISION_HAAR_CASCADE`` environment variable, ``cv2.data.haarcascades`` (OpenCV 4 wheels), then the
system folders of Debian's ``opencv-data`` package (``apt-get install opencv-data``). When OpenCV has no
``CascadeClassifier`` the same XML is evaluated by :class:`HaarCascade`, a numpy port of OpenCV's
``detectMultiScale`` (image pyramid, variance-normalised stump cascade, ``groupRectangles``).

The landmark models are trained on crops around the ground-truth landmarks' bounding box, which is not
the box a detector returns; :func:`landmark_box_from_detection` maps one onto the other.

Example:
    >>> import numpy as np
    >>> detect_faces(np.zeros((120, 160), np.uint8))  # doctest: +SKIP
    []
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from kdcore.errors import KDError

__all__ = ["HaarCascade", "find_cascade", "detect_faces", "largest_face", "landmark_box_from_detection",
           "group_rectangles", "CASCADE_NAME", "DETECTION_TO_LANDMARK_BOX"]

Box = tuple[float, float, float, float]

CASCADE_NAME = "haarcascade_frontalface_default.xml"
_SYSTEM_FOLDERS = ("/usr/share/opencv4/haarcascades", "/usr/share/opencv/haarcascades",
                   "/usr/local/share/opencv4/haarcascades", "/usr/local/share/opencv/haarcascades")

# How the cascade's square box relates to the 68-point landmark bounding box, estimated once on the 50 real
# LFPW test faces of ../shared/fixtures/faces-lfpw (300-W annotations): per image, the largest detection of
# detect_faces() (the face in 49 of 50) against the box of its ground-truth points. Medians (quartiles) of
# (landmark centre - detection centre) / detection side: x 0.011 (-0.053, 0.051), y 0.151 (0.140, 0.178);
# landmark width / side 0.836 (0.801, 0.871), height / side 0.824 (0.792, 0.877). dx is set to 0 (faces
# are mirror-symmetric). Schemes without a jaw contour (COFW's 29 points) have a narrower landmark box.
DETECTION_TO_LANDMARK_BOX = {"dx": 0.0, "dy": 0.15, "width": 0.84, "height": 0.82}

def find_cascade(cascade: str | os.PathLike | None = None) -> Path:
    """The Haar cascade XML to use; raises :class:`KDError` saying how to get one when none is found."""
    if cascade is not None:
        path = Path(cascade)
        if not path.is_file():
            raise KDError(f"{path}: Haar cascade file not found")
        return path
    candidates = []
    if os.environ.get("KDVISION_HAAR_CASCADE"):
        candidates.append(Path(os.environ["KDVISION_HAAR_CASCADE"]))
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if folder:
        candidates.append(Path(folder) / CASCADE_NAME)
    candidates += [Path(f) / CASCADE_NAME for f in _SYSTEM_FOLDERS]
    for path in candidates:
        if path.is_file():
            return path
    raise KDError(f"no face detector: {CASCADE_NAME} was not found (OpenCV {cv2.__version__} wheels do not ship "
                  f"it; install Debian's opencv-data package or set KDVISION_HAAR_CASCADE to the file), or "
                  f"pass the face box explicitly")


@dataclass(frozen=True)
class _Stage:
    threshold: float
    features: np.ndarray      # (n,) feature index of each stump
    thresholds: np.ndarray    # (n,) stump thresholds (on variance-normalised feature values)
    left: np.ndarray          # (n,) value added when feature < threshold
    right: np.ndarray


class HaarCascade:
    """A stump-based Haar cascade in OpenCV's XML format, evaluated with numpy.

    Mirrors ``cv::CascadeClassifier::detectMultiScale``: windows of the cascade's size slide over an image
    pyramid (step 2 pixels below scale 2, 1 above), each window's features are divided by its standard
    deviation times its area, windows with a standard deviation below 10 grey levels are rejected, and
    the surviving windows are merged by :func:`group_rectangles`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            root = ET.parse(self.path).getroot().find("cascade")
        except (ET.ParseError, OSError) as exc:
            raise KDError(f"{self.path}: not a readable cascade XML ({exc})") from None
        if root is None or root.findtext("featureType", "").strip() != "HAAR":
            raise KDError(f"{self.path}: not an OpenCV HAAR cascade (new XML format expected)")
        self.window = (int(root.findtext("width")), int(root.findtext("height")))
        rects, weights = [], []
        for feature in root.find("features"):
            if feature.findtext("tilted", "0").strip() not in ("0", ""):
                raise KDError(f"{self.path}: tilted Haar features are not supported")
            parts = [[float(v) for v in r.text.split()] for r in feature.find("rects")]
            parts += [[0, 0, 0, 0, 0.0]] * (3 - len(parts))  # pad to 3 rectangles with zero weight
            rects.append([p[:4] for p in parts])
            weights.append([p[4] for p in parts])
        rects_arr = np.asarray(rects, dtype=np.int64)        # (F, 3, 4) x, y, w, h
        weights_arr = np.asarray(weights, dtype=np.float64)  # (F, 3)
        x, y, w, h = (rects_arr[..., i] for i in range(4))
        # each rectangle sum is 4 integral-image corners (+ - - +), flattened to 12 per feature
        self._corner_rows = np.stack([y + h, y, y + h, y], axis=-1).reshape(len(rects), 12)
        self._corner_cols = np.stack([x + w, x + w, x, x], axis=-1).reshape(len(rects), 12)
        self._weights = weights_arr.astype(np.float32)
        self.stages = []
        for stage in root.find("stages"):
            nodes, leaves = [], []
            for weak in stage.find("weakClassifiers"):
                values = weak.findtext("internalNodes").split()
                if len(values) != 4:
                    raise KDError(f"{self.path}: only stump cascades (one node per weak classifier) are supported")
                nodes.append((int(values[2]), float(values[3])))
                leaves.append([float(v) for v in weak.findtext("leafValues").split()])
            nodes_arr, leaves_arr = np.asarray(nodes), np.asarray(leaves)
            leaves_arr = leaves_arr.astype(np.float32).astype(np.float64)
            self.stages.append(_Stage(float(np.float32(stage.findtext("stageThreshold"))),
                                      nodes_arr[:, 0].astype(np.int64), nodes_arr[:, 1].astype(np.float32),
                                      leaves_arr[:, 0], leaves_arr[:, 1]))

    def _passes(self, stage: _Stage, total: np.ndarray, stride: int, base: np.ndarray,
                scale: np.ndarray) -> np.ndarray:
        """Whether each window (flat integral-image offset ``base``) passes ``stage``."""
        offsets = self._corner_rows[stage.features] * stride + self._corner_cols[stage.features]
        weights = self._weights[stage.features][:, :, None]
        score = np.zeros(base.size)
        chunk = max(1, 2_000_000 // offsets.size)  # bound the gathered block to ~16 MB
        for start in range(0, base.size, chunk):
            where = base[start:start + chunk]
            corners = total[offsets[:, :, None] + where].reshape(len(offsets), 3, 4, -1)
            sums = (corners[:, :, 0] - corners[:, :, 1] - corners[:, :, 2] + corners[:, :, 3]).astype(np.float32)
            # float32 as in OpenCV: weighted rectangle sums, times 1 / (std * area), against the stump threshold
            values = weights[:, 0] * sums[:, 0] + weights[:, 1] * sums[:, 1] + weights[:, 2] * sums[:, 2]
            below = values * scale[start:start + chunk] < stage.thresholds[:, None]
            score[start:start + chunk] = np.where(below, stage.left[:, None], stage.right[:, None]).sum(axis=0)
        return score >= stage.threshold

    def _passes_grid(self, stage: _Stage, table: np.ndarray, shape: tuple[int, int], step: int,
                     scale: np.ndarray) -> np.ndarray:
        """:meth:`_passes` for every window of a ``shape`` grid at once, with strided slices (no gathers)."""
        rows, cols = shape
        score = np.zeros(shape)

        def corner(r: int, c: int) -> np.ndarray:
            return table[r:r + (rows - 1) * step + 1:step, c:c + (cols - 1) * step + 1:step]

        for feature, threshold, left, right in zip(stage.features, stage.thresholds, stage.left, stage.right):
            value = np.zeros(shape, dtype=np.float32)
            r, c = self._corner_rows[feature], self._corner_cols[feature]
            for k in range(3):
                weight = self._weights[feature, k]
                if weight != 0:
                    i = 4 * k
                    box = (corner(r[i], c[i]) - corner(r[i + 1], c[i + 1])
                           - corner(r[i + 2], c[i + 2]) + corner(r[i + 3], c[i + 3]))
                    value = value + weight * box.astype(np.float32)
            score += np.where(value * scale < threshold, left, right)
        return score >= stage.threshold

    def _windows(self, gray: np.ndarray, factor: float) -> list[tuple[int, int, int, int]]:
        """Accepted windows at one pyramid level, in original-image pixels."""
        height, width = gray.shape
        win_w, win_h = self.window
        size = (int(round(width / factor)), int(round(height / factor)))
        if size[0] < win_w or size[1] < win_h:
            return []
        scaled = cv2.resize(gray, size, interpolation=cv2.INTER_LINEAR_EXACT) if factor != 1 else gray
        # int32 sums are exact below 2**31 / 255 pixels (and gather twice as fast); squares need float64
        total, squares = cv2.integral2(scaled, sdepth=cv2.CV_32S if scaled.size < 2 ** 23 else cv2.CV_64F,
                                       sqdepth=cv2.CV_64F)
        stride = total.shape[1]
        total, squares = total.ravel(), squares.ravel()
        step = 1 if factor >= 2 else 2
        ys, xs = np.mgrid[0:size[1] - win_h + 1:step, 0:size[0] - win_w + 1:step]
        base = ys * stride + xs  # (rows, cols) grid of window positions

        def inner_sum(table: np.ndarray) -> np.ndarray:  # the window less a 1-pixel border
            top, bottom, left, right = stride, (win_h - 1) * stride, 1, win_w - 1
            return (table[base + bottom + right] - table[base + top + right]
                    - table[base + bottom + left] + table[base + top + left])

        area = (win_w - 2) * (win_h - 2)
        norm = np.sqrt(np.maximum(area * inner_sum(squares) - inner_sum(total).astype(np.float64) ** 2, 0.0))
        valid = norm > 10.0 * area  # OpenCV: std > 10 grey levels, flat windows are never faces
        scale = (1.0 / np.where(valid, norm, 1.0)).astype(np.float32)
        first = valid & self._passes_grid(self.stages[0], total.reshape(-1, stride), base.shape, step, scale)
        # OpenCV skips the next position of a row after a window the first stage rejected; in a run of such
        # rejections every other position is evaluated, so position j is skipped when the run before it is odd.
        rejected = valid & ~first
        index = np.arange(rejected.shape[1])
        last_kept = np.maximum.accumulate(np.where(rejected, -1, index), axis=1)
        run = index - last_kept  # rejections ending at each position
        skipped = np.zeros_like(rejected)
        skipped[:, 1:] = run[:, :-1] % 2 == 1
        alive = first & ~skipped
        base, scale = base[alive], scale[alive]
        for stage in self.stages[1:]:
            if base.size == 0:
                return []
            passed = self._passes(stage, total, stride, base, scale)
            base, scale = base[passed], scale[passed]
        f32 = np.float32(factor)
        wx, wy = int(np.rint(win_w * f32)), int(np.rint(win_h * f32))
        xs = np.rint((base % stride).astype(np.float32) * f32).astype(int)
        ys = np.rint((base // stride).astype(np.float32) * f32).astype(int)
        return [(int(x), int(y), wx, wy) for x, y in zip(xs, ys)]

    def detect(self, gray: np.ndarray, scale_factor: float = 1.1, min_neighbors: int = 3,
               min_size: int = 0) -> list[tuple[int, int, int, int]]:
        """``(x, y, w, h)`` face rectangles in a greyscale uint8 image, like ``detectMultiScale``."""
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise ValueError(f"expected a greyscale uint8 image, got shape {gray.shape} dtype {gray.dtype}")
        candidates: list[tuple[int, int, int, int]] = []
        factor = 1.0
        while True:
            side = (round(self.window[0] * factor), round(self.window[1] * factor))
            if side[0] > gray.shape[1] or side[1] > gray.shape[0]:
                break
            if min(side) >= min_size:
                candidates += self._windows(gray, float(np.float32(factor)))  # OpenCV keeps scales as float
            factor *= scale_factor
        return group_rectangles(candidates, min_neighbors)


def group_rectangles(rects: Sequence[tuple[int, int, int, int]], group_threshold: int,
                     eps: float = 0.2) -> list[tuple[int, int, int, int]]:
    """OpenCV's ``groupRectangles``: average clusters of similar rectangles, keep those with more than
    ``group_threshold`` members, and drop small clusters lying inside a stronger one."""
    rects = [tuple(int(v) for v in r) for r in rects]
    parent = list(range(len(rects)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def similar(a: tuple, b: tuple) -> bool:
        delta = eps * (min(a[2], b[2]) + min(a[3], b[3])) * 0.5
        return (abs(a[0] - b[0]) <= delta and abs(a[1] - b[1]) <= delta
                and abs(a[0] + a[2] - b[0] - b[2]) <= delta and abs(a[1] + a[3] - b[1] - b[3]) <= delta)

    for i in range(len(rects)):
        for j in range(i):
            if similar(rects[i], rects[j]):
                parent[root(i)] = root(j)
    clusters: dict[int, list[tuple]] = {}
    for i, rect in enumerate(rects):
        clusters.setdefault(root(i), []).append(rect)
    averaged = [(tuple(int(round(v)) for v in np.mean(members, axis=0)), len(members))
                for members in clusters.values()]
    kept = []
    for i, (r1, n1) in enumerate(averaged):
        if n1 <= group_threshold:
            continue
        inside = False
        for j, (r2, n2) in enumerate(averaged):
            if i == j or n2 <= group_threshold:
                continue
            dx, dy = int(r2[2] * eps), int(r2[3] * eps)
            if (r1[0] >= r2[0] - dx and r1[1] >= r2[1] - dy and r1[0] + r1[2] <= r2[0] + r2[2] + dx
                    and r1[1] + r1[3] <= r2[1] + r2[3] + dy and (n2 > max(3, n1) or n1 < 3)):
                inside = True
                break
        if not inside:
            kept.append(r1)
    return kept


@lru_cache(maxsize=4)
def _detector(path: str):
    if hasattr(cv2, "CascadeClassifier"):  # OpenCV 4, or 5 with the contrib modules
        classifier = cv2.CascadeClassifier(path)
        if not classifier.empty():
            return classifier
    return HaarCascade(path)


def detect_faces(image: np.ndarray, cascade: str | os.PathLike | None = None, max_side: int = 800,
                 min_neighbors: int = 3, scale_factor: float = 1.1) -> list[Box]:
    """Face boxes ``(x0, y0, x1, y1)`` (0-based pixels), largest first.

    Args:
        image: (H, W) greyscale or (H, W, 3) RGB uint8.
        cascade: a cascade XML; default :func:`find_cascade`.
        max_side: larger images are shrunk to this longer side first (speed); boxes are mapped back.
        min_neighbors, scale_factor: as in ``cv2.CascadeClassifier.detectMultiScale``.
    """
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
    detector = _detector(str(find_cascade(cascade)))
    if isinstance(detector, HaarCascade):
        rects = detector.detect(gray, scale_factor, min_neighbors)
    else:
        found = detector.detectMultiScale(gray, scaleFactor=scale_factor, minNeighbors=min_neighbors)
        rects = [tuple(int(v) for v in r) for r in np.asarray(found).reshape(-1, 4)]
    boxes = [(x / shrink, y / shrink, (x + w) / shrink, (y + h) / shrink) for x, y, w, h in rects]
    return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)


def largest_face(image: np.ndarray, source: str | os.PathLike = "the image",
                 cascade: str | os.PathLike | None = None) -> Box:
    """The largest detected face box; raises :class:`KDError` ``"no face found in <source>"`` when none."""
    boxes = detect_faces(image, cascade)
    if not boxes:
        raise KDError(f"no face found in {source} (pass the face box explicitly if the face is there)")
    return boxes[0]


def landmark_box_from_detection(box: Sequence[float]) -> Box:
    """Map a cascade box onto the landmark bounding box the models were trained around."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = ((x1 - x0) + (y1 - y0)) / 2.0
    cx = (x0 + x1) / 2.0 + DETECTION_TO_LANDMARK_BOX["dx"] * side
    cy = (y0 + y1) / 2.0 + DETECTION_TO_LANDMARK_BOX["dy"] * side
    half_w, half_h = DETECTION_TO_LANDMARK_BOX["width"] * side / 2.0, DETECTION_TO_LANDMARK_BOX["height"] * side / 2.0
    return cx - half_w, cy - half_h, cx + half_w, cy + half_h
