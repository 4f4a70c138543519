"""A folder tree of images with an iBUG ``.pts`` file beside each (the user's own data, ``facekd synth`` output).

An optional ``subjects.csv`` at the root (columns ``image,subject``; image paths relative to the root) gives
subject ids; without it every image is its own subject.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np

from kdcore.errors import DataError
from kdcore.textfiles import utf8_error
from facekd.pts_files import read_pts

from .records import FaceRecord, ItemError, check_landmarks, image_size, split_message

__all__ = ["IMAGE_SUFFIXES", "SUBJECTS_FILE", "find_pairs", "scan_pairs", "scan_folder", "has_subject_file"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm", ".webp"})
SUBJECTS_FILE = "subjects.csv"


def _visible_files(directory: Path, recursive: bool) -> list[Path]:
    candidates = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(p for p in candidates
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts))


def find_pairs(directory: Path, recursive: bool = True, id_base: Path | None = None,
               ) -> tuple[list[tuple[Path, Path]], list[ItemError]]:
    """Pair each image with the ``.pts`` of the same stem in the same folder.

    Returns the pairs (sorted) and one ``missing_pair`` error per image without ``.pts``, ``.pts`` without
    image, or ``.pts`` claimed by two images (``a.jpg`` and ``a.png``); their record ids are paths relative
    to ``id_base`` (default ``directory``) without suffix.
    """
    id_base = directory if id_base is None else id_base
    images: dict[Path, list[Path]] = {}
    pts_files: dict[Path, Path] = {}  # by the path without suffix: `image.PTS` belongs to `image.png`
    for path in _visible_files(directory, recursive):
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            images.setdefault(path.with_suffix(""), []).append(path)
        elif suffix == ".pts":
            pts_files[path.with_suffix("")] = path
    pairs, errors = [], []
    for stem, owners in sorted(images.items()):
        pts = pts_files.get(stem)
        if pts is None:
            errors += [ItemError("missing_pair", str(image), f"image has no .pts file beside it (expected "
                                 f"{stem.name}.pts)", _record_id(image, id_base)) for image in owners]
        elif len(owners) > 1:
            errors.append(ItemError("missing_pair", str(pts), "claimed by several images: "
                                    + ", ".join(p.name for p in owners) + " (keep one image per .pts)",
                                    _record_id(pts, id_base)))
        else:
            pairs.append((owners[0], pts))
    errors += [ItemError("missing_pair", str(pts), "no image beside this .pts file", _record_id(pts, id_base))
               for stem, pts in sorted(pts_files.items()) if stem not in images]
    return pairs, errors


def _record_id(image: Path, base: Path) -> str:
    return image.relative_to(base).with_suffix("").as_posix()


def scan_pairs(pairs: list[tuple[Path, Path]], base: Path, n_points: int | None, check_bounds: bool,
               subjects: dict[str, str] | None = None, subsets: dict[Path, str] | None = None,
               ) -> Iterator[FaceRecord | ItemError]:
    """Read the ``.pts`` of each pair and yield records or errors.

    With ``n_points=None`` the expected count is the most common one among the files that parse.
    ``subjects`` maps record id -> subject (missing ids are errors); ``subsets`` maps image -> subset name.
    """
    parsed: list[tuple[Path, Path, np.ndarray]] = []
    for image, pts in pairs:
        try:
            parsed.append((image, pts, read_pts(pts)))
        except DataError as exc:
            where, detail = split_message(exc, pts)
            yield ItemError("bad_annotation", where, detail, _record_id(image, base))
    how = ""
    if n_points is None and parsed:
        n_points = Counter(len(points) for _, _, points in parsed).most_common(1)[0][0]
        how = " (the most common count in this folder; pass n_points to set it)"
    for image, pts, points in parsed:
        record_id = _record_id(image, base)
        if len(points) != n_points:
            yield ItemError("wrong_point_count", str(pts), f"{len(points)} points, expected {n_points}{how}",
                            record_id)
            continue
        try:
            size = image_size(image) if check_bounds else None
        except DataError as exc:
            yield ItemError("unreadable_image", *split_message(exc, image), record_id)
            continue
        problem = check_landmarks(points, size)
        if problem:
            yield ItemError("bad_landmarks", str(pts), problem, record_id)
            continue
        if subjects is None:
            subject = record_id
        elif record_id in subjects:
            subject = subjects[record_id]
        else:
            yield ItemError("bad_subjects_file", str(image), f"image is not listed in {SUBJECTS_FILE}", record_id)
            continue
        yield FaceRecord(record_id, image, points, subject, subset=(subsets or {}).get(image))


def has_subject_file(root: str | Path) -> bool:
    """True when the folder gives real subject ids (a ``subjects.csv`` at its root)."""
    return (Path(root) / SUBJECTS_FILE).is_file()


def _read_subjects(csv_path: Path) -> tuple[dict[str, str], list[ItemError]]:
    subjects: dict[str, str] = {}
    errors: list[ItemError] = []
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"image", "subject"} <= set(reader.fieldnames):
                return {}, [ItemError("bad_subjects_file", f"{csv_path}:1",
                                      f"header must have columns image,subject, got {reader.fieldnames}")]
            for row in reader:
                where = f"{csv_path}:{reader.line_num}"
                image, subject = (row["image"] or "").strip(), (row["subject"] or "").strip()
                if not image or not subject:
                    errors.append(ItemError("bad_subjects_file", where, "empty image or subject"))
                    continue
                key = Path(image).with_suffix("").as_posix()
                if subjects.get(key, subject) != subject:
                    errors.append(ItemError("bad_subjects_file", where,
                                            f"{image} listed again with another subject ({subjects[key]!r} "
                                            f"then {subject!r})"))
                    continue
                subjects[key] = subject
    except UnicodeDecodeError:
        line, reason = utf8_error(csv_path) or (1, "not UTF-8")
        return {}, [ItemError("bad_subjects_file", f"{csv_path}:{line}", reason)]
    except (OSError, csv.Error) as exc:
        return {}, [ItemError("bad_subjects_file", str(csv_path), f"cannot read ({exc})")]
    return subjects, errors


def scan_folder(root: str | Path, split: str | None = None, n_points: int | None = None,
                check_bounds: bool = True) -> Iterator[FaceRecord | ItemError]:
    """Scan ``root`` (or its sub-folder ``split``) recursively.

    Record ids are image paths relative to ``root`` without suffix; ``subset`` is ``split``.

    Raises:
        DataError: ``root`` or ``root/split`` is not a folder.
    """
    root = Path(root)
    base = root if split in (None, "all") else root / split
    if not base.is_dir():
        raise DataError(f"{base}: not a folder")
    subjects = None
    if has_subject_file(root):
        subjects, errors = _read_subjects(root / SUBJECTS_FILE)
        yield from errors
    pairs, errors = find_pairs(base, recursive=True, id_base=root)
    yield from errors
    subsets = {image: split for image, _ in pairs} if split not in (None, "all") else None
    yield from scan_pairs(pairs, root, n_points, check_bounds, subjects, subsets)
