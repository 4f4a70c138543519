"""The face record every loader returns, and the per-item checks they share.

Loaders are written as *scanners*: generators that yield one :class:`FaceRecord` per good face and one
:class:`ItemError` per bad item, so that training code can stop at the first error while the audit
collects all of them from the same code path.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np
from PIL import Image, UnidentifiedImageError

from kdcore.errors import DataError

__all__ = ["FaceRecord", "ItemError", "check_landmarks", "image_size", "split_message", "OUTSIDE_MARGIN"]

OUTSIDE_MARGIN = 0.5  # a point may lie up to half the image size beyond an edge (faces cut by the frame)


@dataclass(frozen=True, eq=False)
class FaceRecord:
    """One annotated face.

    Attributes:
        record_id: unique within a loaded dataset, stable across runs (e.g. ``"lfpw/trainset/image_0001"``).
        image_path: the image file, or for COFW the ``.mat`` file holding the image.
        landmarks: ``(K, 2)`` float64, 0-based pixel ``x, y`` (read-only).
        subject: group id for subject-wise splits (the image itself when the dataset has no identities).
        box: face box ``(x_min, y_min, x_max, y_max)`` in 0-based pixels, when the dataset gives one.
        subset: the dataset's own subset name (``"train"``, ``"common"``, ``"challenging"``, ``"test"``...).
        attributes: 0/1 flags (WFLW pose, expression...); empty when none.
        occluded: ``(K,)`` bool, True where a point is hidden (COFW only).
        image_index: position of the image inside ``image_path`` when that file is a container (COFW).
    """

    record_id: str
    image_path: Path
    landmarks: np.ndarray
    subject: str
    box: tuple[float, float, float, float] | None = None
    subset: str | None = None
    attributes: Mapping[str, int] = field(default_factory=dict)
    occluded: np.ndarray | None = None
    image_index: int | None = None

    def __post_init__(self) -> None:
        landmarks = np.array(self.landmarks, dtype=np.float64)  # a private copy we can freeze
        if landmarks.ndim != 2 or landmarks.shape[1] != 2:
            raise ValueError(f"{self.record_id}: landmarks must have shape (K, 2), got {landmarks.shape}")
        landmarks.setflags(write=False)
        object.__setattr__(self, "landmarks", landmarks)
        object.__setattr__(self, "image_path", Path(self.image_path))
        object.__setattr__(self, "attributes", MappingProxyType(dict(self.attributes)))
        if self.box is not None:
            object.__setattr__(self, "box", tuple(float(v) for v in self.box))
            if len(self.box) != 4:
                raise ValueError(f"{self.record_id}: box must have 4 values, got {len(self.box)}")
        if self.occluded is not None:
            occluded = np.array(self.occluded, dtype=bool)
            if occluded.shape != (len(landmarks),):
                raise ValueError(f"{self.record_id}: occluded must have shape ({len(landmarks)},), "
                                 f"got {occluded.shape}")
            occluded.setflags(write=False)
            object.__setattr__(self, "occluded", occluded)

    @property
    def n_points(self) -> int:
        return len(self.landmarks)

    @property
    def image_key(self) -> tuple[str, int | None]:
        """Identifies the image (several faces may share one)."""
        return str(self.image_path), self.image_index


@dataclass(frozen=True)
class ItemError:
    """A bad item found while scanning: ``path`` names the file (and line or row), ``detail`` says why.

    ``kind`` is one of ``missing_pair``, ``missing_file``, ``unreadable_image``, ``bad_annotation``,
    ``wrong_point_count``, ``bad_landmarks``, ``bad_subjects_file``. ``record_id`` is the id the item would
    have had, when it is known.
    """

    kind: str
    path: str
    detail: str
    record_id: str | None = None

    def to_error(self) -> DataError:
        return DataError(f"{self.path}: {self.detail}")


def split_message(exc: Exception, path: str | os.PathLike) -> tuple[str, str]:
    """Split an error message ``"<path>[:<line>]: why"`` into ``("<path>[:<line>]", "why")``.

    Example:
        >>> split_message(DataError("a.pts:3: not a number"), "a.pts")
        ('a.pts:3', 'not a number')
    """
    path, message = str(path), str(exc)
    if message.startswith(path):
        match = re.match(r"(:\d+)?: (.*)", message[len(path):], flags=re.DOTALL)
        if match:
            return path + (match.group(1) or ""), match.group(2)
    return path, message


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` from the image header, without decoding the pixels.

    Raises:
        DataError: the file is missing or not an image PIL can identify.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            # read_image turns EXIF-rotated photographs upright; the size must describe the same pixels
            try:
                turned = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
            except Exception:  # noqa: BLE001 - unreadable EXIF (a cut file): decoding reports what is wrong
                turned = False
            return (height, width) if turned else (width, height)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot read the image header ({exc})") from None


def check_landmarks(landmarks: np.ndarray, size: tuple[int, int] | None,
                    margin: float = OUTSIDE_MARGIN) -> str | None:
    """Return why ``landmarks`` are unusable (non-finite, far outside a ``(width, height)`` image), or None.

    Example:
        >>> check_landmarks(np.array([[5.0, 5.0]]), (10, 10)) is None
        True
        >>> check_landmarks(np.array([[30.0, 5.0]]), (10, 10))
        'point 0 at (30.0, 5.0) is far outside the 10x10 image (more than 50% of its size beyond an edge)'
    """
    finite = np.isfinite(landmarks).all(axis=1)
    if not finite.all():
        index = int(np.flatnonzero(~finite)[0])
        return f"point {index} has a non-finite coordinate {tuple(landmarks[index].tolist())}"
    extent = landmarks.max(axis=0) - landmarks.min(axis=0)
    if len(landmarks) > 2 and (extent < 1.0).any():
        # A face whose points collapse to a line or a point has no crop and a zero NME normaliser.
        return (f"the {len(landmarks)} points span only {extent[0]:.1f}x{extent[1]:.1f} pixels "
                "(collapsed annotation: every point on one line or at one place)")
    if size is None:
        return None
    width, height = size
    low = -margin * np.array([width, height])
    high = (1.0 + margin) * np.array([width, height])
    outside = ((landmarks < low) | (landmarks > high)).any(axis=1)
    if outside.any():
        index = int(np.flatnonzero(outside)[0])
        x, y = landmarks[index]
        return (f"point {index} at ({x:.1f}, {y:.1f}) is far outside the {width}x{height} image "
                f"(more than {margin:.0%} of its size beyond an edge)")
    return None
