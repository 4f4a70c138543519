"""WFLW (98 points) in its public layout.

``root/WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{train,test}.txt`` and
``root/WFLW_images/<event folder>/<name>.jpg``. One line per face: 196 coordinates ``x0 y0 ... x97 y97``
(pixels, used as 0-based as the public loaders do), the box ``x_min y_min x_max y_max``, six 0/1 flags
(pose, expression, illumination, make-up, occlusion, blur) and the image path relative to ``WFLW_images``.
WFLW has no identities: the subject is the image, so the faces of one photo stay in one fold.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import numpy as np

from kdcore.errors import DataError

from .records import FaceRecord, ItemError, check_landmarks, image_size, split_message

__all__ = ["N_POINTS", "ATTRIBUTES", "SPLITS", "EXPECTED_FACES", "annotation_file", "parse_line", "scan_wflw"]

N_POINTS = 98
ATTRIBUTES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")
SPLITS = ("train", "test", "all") + ATTRIBUTES  # an attribute name = the test faces with that flag set
EXPECTED_FACES = {"train": 7500, "test": 2500}
_N_FIELDS = 2 * N_POINTS + 4 + len(ATTRIBUTES) + 1


def annotation_file(root: Path, part: str) -> Path:
    return root / "WFLW_annotations" / "list_98pt_rect_attr_train_test" / f"list_98pt_rect_attr_{part}.txt"


def parse_line(text: str) -> tuple[np.ndarray, tuple[float, ...], dict[str, int], str]:
    """Parse one annotation line into ``(landmarks (98, 2), box, attributes, image path)``.

    Raises:
        ValueError: the reason the line is malformed (the caller adds file and line).
    """
    fields = text.split()
    if len(fields) != _N_FIELDS:
        raise ValueError(f"expected {_N_FIELDS} fields ({2 * N_POINTS} coordinates, 4 box values, "
                         f"{len(ATTRIBUTES)} attributes, image path), got {len(fields)}")
    numbers = []
    for position, value in enumerate(fields[:2 * N_POINTS + 4]):
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"field {position + 1} is not a number: {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"field {position + 1} is not finite: {value!r}")
        numbers.append(number)
    landmarks = np.asarray(numbers[:2 * N_POINTS], dtype=np.float64).reshape(N_POINTS, 2)
    box = tuple(numbers[2 * N_POINTS:])
    if not (box[0] < box[2] and box[1] < box[3]):
        raise ValueError(f"box {box} is not x_min y_min x_max y_max with x_min < x_max and y_min < y_max")
    attributes = {}
    for name, value in zip(ATTRIBUTES, fields[2 * N_POINTS + 4:-1]):
        if value not in ("0", "1"):
            raise ValueError(f"attribute {name} must be 0 or 1, got {value!r}")
        attributes[name] = int(value)
    return landmarks, box, attributes, fields[-1]


def _image_status(image: Path, check_bounds: bool) -> tuple[tuple[int, int] | None, tuple[str, str] | None]:
    """``(size or None, (kind, detail) when the image is missing or unreadable)``."""
    if not image.is_file():
        return None, ("missing_pair", f"image file not found: {image}")
    if not check_bounds:
        return None, None
    try:
        return image_size(image), None
    except DataError as exc:
        return None, ("unreadable_image", f"image {image}: {split_message(exc, image)[1]}")


def _scan_part(root: Path, part: str, attribute: str | None, check_bounds: bool) -> Iterator[FaceRecord | ItemError]:
    path = annotation_file(root, part)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        yield ItemError("missing_file", str(path), "WFLW annotation file not found")
        return
    except (OSError, UnicodeDecodeError) as exc:
        yield ItemError("bad_annotation", str(path), f"cannot read ({exc})")
        return
    sizes: dict[Path, tuple[tuple[int, int] | None, tuple[str, str] | None]] = {}
    faces_seen: dict[str, int] = {}
    for lineno, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            landmarks, box, attributes, relative = parse_line(text)
        except ValueError as exc:
            yield ItemError("bad_annotation", where, str(exc))
            continue
        face = faces_seen.get(relative, 0)
        faces_seen[relative] = face + 1
        record_id = f"{part}/{Path(relative).with_suffix('').as_posix()}#{face}"
        if attribute is not None and not attributes[attribute]:
            continue
        image = root / "WFLW_images" / relative
        images_root = (root / "WFLW_images").resolve()
        if Path(relative).is_absolute() or ".." in Path(relative).parts or images_root not in image.resolve().parents:
            yield ItemError("bad_annotation", where, f"image path {relative!r} leads outside WFLW_images/ "
                            "(absolute, '..' or a symbolic link): refused", record_id)
            continue
        if image not in sizes:
            sizes[image] = _image_status(image, check_bounds)
        size, failure = sizes[image]
        if failure:
            yield ItemError(failure[0], where, failure[1], record_id)
            continue
        problem = check_landmarks(landmarks, size)
        if problem:
            yield ItemError("bad_landmarks", where, problem, record_id)
            continue
        yield FaceRecord(record_id, image, landmarks, subject=relative, box=box, subset=part, attributes=attributes)


def scan_wflw(root: str | Path, split: str | None = None, check_bounds: bool = True,
              ) -> Iterator[FaceRecord | ItemError]:
    """Yield the faces of ``split`` (``train``, ``test``, ``all`` or an attribute name for a test subset).

    Raises:
        DataError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected the WFLW root with WFLW_annotations/ and WFLW_images/)")
    split = split or "all"
    parts = ("train", "test") if split == "all" else ("train",) if split == "train" else ("test",)
    attribute = split if split in ATTRIBUTES else None
    for part in parts:
        yield from _scan_part(root, part, attribute, check_bounds)
