"""Facial-landmark dataset loaders: 300-W, WFLW, COFW and a plain folder of images with ``.pts`` files.

Example:
    >>> from facekd.formats import load_faces, load_face_image        # doctest: +SKIP
    >>> records = load_faces("data/300W", "300w", split="common")      # doctest: +SKIP
    >>> image = load_face_image(records[0])  # RGB uint8 (H, W, 3)     # doctest: +SKIP

Every loader is a scanner yielding :class:`FaceRecord` or :class:`ItemError`; :func:`load_faces` raises
the first error (a :class:`~kdcore.errors.DataError` naming the file, line and reason) and
:func:`facekd.audit.audit_faces` collects them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np

from kdcore.errors import ConfigError
from kdcore.images import read_image

from . import cofw, folder, w300, wflw
from .records import FaceRecord, ItemError

__all__ = ["FaceRecord", "ItemError", "FaceFormat", "FORMATS", "get_format", "scan_faces", "load_faces",
           "load_face_image"]


@dataclass(frozen=True)
class FaceFormat:
    """A dataset layout: its point count (None when the files decide), split names and scanner."""

    name: str
    n_points: int | None
    splits: tuple[str, ...]
    scan: Callable[..., Iterator[FaceRecord | ItemError]]
    expected: dict[str, int] | None = None  # subset -> count in the public release


FORMATS: dict[str, FaceFormat] = {
    "300w": FaceFormat("300w", w300.N_POINTS, tuple(w300.SPLITS), w300.scan_300w, w300.EXPECTED_IMAGES),
    "wflw": FaceFormat("wflw", wflw.N_POINTS, wflw.SPLITS, wflw.scan_wflw, wflw.EXPECTED_FACES),
    "cofw": FaceFormat("cofw", cofw.N_POINTS, cofw.SPLITS, cofw.scan_cofw, cofw.EXPECTED_FACES),
    "folder": FaceFormat("folder", None, ("all", "<sub-folder>"), folder.scan_folder),
}


def get_format(format: str) -> FaceFormat:
    try:
        return FORMATS[format]
    except KeyError:
        raise ConfigError(f"format: unknown face dataset format {format!r} (known: {', '.join(FORMATS)})") from None


def scan_faces(root: str | os.PathLike, format: str, split: str | None = None, *, check_bounds: bool = True,
               n_points: int | None = None) -> Iterator[FaceRecord | ItemError]:
    """Yield a record per good face and an :class:`ItemError` per bad item (see :func:`load_faces`)."""
    spec = get_format(format)
    if spec.n_points is None:
        return spec.scan(root, split, n_points=n_points, check_bounds=check_bounds)
    if n_points is not None and n_points != spec.n_points:
        raise ConfigError(f"n_points: {format} has {spec.n_points} points, got n_points={n_points}")
    if split is not None and split not in spec.splits:
        raise ConfigError(f"split: {format} has no split {split!r} (known: {', '.join(spec.splits)})")
    return spec.scan(root, split, check_bounds=check_bounds)


def load_faces(root: str | os.PathLike, format: Literal["300w", "wflw", "cofw", "folder"], split: str | None = None,
               *, on_missing: Literal["error", "skip"] = "error", check_bounds: bool = True,
               n_points: int | None = None) -> list[FaceRecord]:
    """Load the faces of one dataset split, raising at the first bad item.

    Args:
        root: the dataset folder in its public layout (see the data cards).
        format: ``"300w"``, ``"wflw"``, ``"cofw"`` or ``"folder"``.
        split: a split of the format (``FORMATS[format].splits``); None = all. For ``"folder"`` a
            sub-folder of ``root``.
        on_missing: ``"skip"`` leaves out images without annotation (and the reverse) instead of raising.
        check_bounds: check landmarks against the image size (read from the header, not decoded).
        n_points: the point count of a ``"folder"`` dataset (default: its most common count).

    Raises:
        DataError: the first bad item, naming the file (and line) and why.
        ConfigError: unknown format or split.
    """
    if on_missing not in ("error", "skip"):
        raise ConfigError(f"on_missing: must be 'error' or 'skip', got {on_missing!r}")
    records = []
    for item in scan_faces(root, format, split, check_bounds=check_bounds, n_points=n_points):
        if isinstance(item, FaceRecord):
            records.append(item)
        elif not (on_missing == "skip" and item.kind == "missing_pair"):
            raise item.to_error()
    return records


def load_face_image(record: FaceRecord) -> np.ndarray:
    """The record's image as RGB uint8 ``(H, W, 3)`` (COFW images come from inside the ``.mat`` file).

    Raises:
        DataError: the image is missing, truncated or undecodable (an ``ImageReadError`` for files).
    """
    if record.image_index is not None:
        return cofw.read_cofw_image(record.image_path, record.image_index)
    return read_image(Path(record.image_path), "rgb", allow_alpha=True)
