"""Audit a face dataset before training: every bad file, every missing pair, every duplicate, in one report.

The loaders stop at the first error; the audit walks the same scanners and collects everything, then
decodes each image once (truncated or corrupt files), hashes it (exact duplicates) and compares perceptual
hashes (near duplicates: resized or re-encoded copies). A duplicate shared by different subjects is a
leak between folds: blocking when the dataset has real subject ids, a warning when each image is only
its own subject (300-W, WFLW, COFW, a folder without ``subjects.csv``).

Example:
    >>> report = audit_faces("data/300W", "300w")                          # doctest: +SKIP
    >>> excluded = integrity_gate(report, exclude=True)                   # doctest: +SKIP
    >>> records = [r for r in report.records if r.record_id not in set(excluded)]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import imagehash
import numpy as np
from PIL import Image

from kdcore.errors import DataError
from kdcore.findings import AuditFindings
from facekd.formats import FORMATS, FaceRecord, get_format, load_face_image, scan_faces, w300
from facekd.formats.folder import has_subject_file
from facekd.formats.records import split_message

__all__ = ["Problem", "FaceAuditReport", "audit_faces", "integrity_gate", "NEAR_DUPLICATE_DISTANCE"]

NEAR_DUPLICATE_DISTANCE = 4  # bits of the 64-bit pHash; resized/re-encoded copies differ by 0-4
_SHOWN = 20


@dataclass(frozen=True)
class Problem:
    """One finding. ``path`` names the file (and line); ``record_ids`` are the faces it concerns."""

    severity: Literal["blocking", "warning"]
    kind: str
    path: str
    detail: str
    record_ids: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"severity": self.severity, "kind": self.kind, "path": self.path, "detail": self.detail,
                "record_ids": list(self.record_ids)}

    def __str__(self) -> str:
        return f"[{self.severity}] {self.kind}: {self.path}: {self.detail}"


@dataclass
class FaceAuditReport(AuditFindings):
    """Counts of the good faces and every problem found; ``records`` holds the faces that parsed."""

    root: str
    format: str
    split: str | None
    subjects_known: bool
    images: int = 0
    faces: int = 0
    subjects: int = 0
    per_subset: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    records: list[FaceRecord] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        """JSON-ready summary (without the records)."""
        return {
            "root": self.root, "format": self.format, "split": self.split, "subjects_known": self.subjects_known,
            "counts": {"images": self.images, "faces": self.faces, "subjects": self.subjects,
                       "per_subset": self.per_subset},
            "n_blocking": len(self.blocking), "n_warnings": len(self.warnings),
            "problems_by_kind": dict(Counter(p.kind for p in self.problems)),
            "problems": [p.to_dict() for p in self.problems],
        }


def _counts(records: list[FaceRecord]) -> dict[str, int]:
    return {"images": len({r.image_key for r in records}), "faces": len(records),
            "subjects": len({r.subject for r in records})}


def _covered_subsets(format: str, split: str | None) -> tuple[str, ...]:
    expected = FORMATS[format].expected or {}
    if split in (None, "all"):
        return tuple(expected)
    if format == "300w":
        return w300.SPLITS[split]
    return (split,) if split in expected else ()


def _image_hashes(records: list[FaceRecord], check_images: bool, problems: list[Problem],
                  ) -> tuple[dict[tuple, str], dict[tuple, int]]:
    """Decode (when asked) and hash each image once: ``(sha256 by image, 64-bit pHash by image)``."""
    by_image: dict[tuple, list[FaceRecord]] = defaultdict(list)
    for record in records:
        by_image[record.image_key].append(record)
    exact, perceptual = {}, {}
    for key, group in by_image.items():
        record = group[0]
        ids = tuple(r.record_id for r in group)
        pixels = None
        if check_images or record.image_index is not None:  # images inside a container are hashed by pixels
            try:
                pixels = load_face_image(record)
            except DataError as exc:
                where, reason = split_message(exc, getattr(exc, "path", str(record.image_path)))
                problems.append(Problem("blocking", "unreadable_image", where, reason, ids))
                continue
        if check_images:
            phash = imagehash.phash(Image.fromarray(pixels))
            perceptual[key] = int.from_bytes(np.packbits(phash.hash.ravel()).tobytes(), "big")
        if record.image_index is not None:
            exact[key] = hashlib.sha256(repr(pixels.shape).encode() + pixels.tobytes()).hexdigest()
        else:
            try:
                exact[key] = hashlib.sha256(Path(record.image_path).read_bytes()).hexdigest()
            except OSError as exc:
                problems.append(Problem("blocking", "unreadable_image", str(record.image_path),
                                        f"cannot read ({exc.strerror or exc})", ids))
    return exact, perceptual


def _near_pairs(keys: list[tuple], hashes: list[int], max_distance: int) -> list[tuple[int, int]]:
    """Index pairs ``i < j`` whose pHashes differ in at most ``max_distance`` bits (chunked, vectorised)."""
    values = np.array(hashes, dtype=np.uint64)
    pairs = []
    for start in range(0, len(values), 512):
        block = values[start:start + 512]
        distance = np.bitwise_count(block[:, None] ^ values[None, :])
        rows, cols = np.nonzero(distance <= max_distance)
        keep = cols > rows + start
        pairs += list(zip((rows[keep] + start).tolist(), cols[keep].tolist()))
    return pairs


def _clusters(n: int, pairs: list[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        parent[find(a)] = find(b)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[find(i)].append(i)
    return [g for g in groups.values() if len(g) > 1]


def _duplicate_problems(records: list[FaceRecord], exact: dict[tuple, str], perceptual: dict[tuple, int],
                        subjects_known: bool, max_distance: int) -> list[Problem]:
    by_image: dict[tuple, list[FaceRecord]] = defaultdict(list)
    for record in records:
        by_image[record.image_key].append(record)
    severity = "blocking" if subjects_known else "warning"
    why = ("a leak between folds" if subjects_known
           else "probably the same photo: group these images or remove the copies")

    def problem(kind: str, keys: list[tuple], how: str) -> Problem | None:
        faces = [r for key in keys for r in by_image[key]]
        subjects = sorted({r.subject for r in faces})
        if len(subjects) < 2:
            return None
        names = [f"{path}" + (f"{{{index + 1}}}" if index is not None else "") for path, index in keys]
        return Problem(severity, kind, names[0],
                       f"{how} {', '.join(names[1:])} under {len(subjects)} different subjects "
                       f"({', '.join(subjects[:5])}{', ...' if len(subjects) > 5 else ''}): {why}",
                       tuple(r.record_id for r in faces))

    found = []
    by_hash: dict[str, list[tuple]] = defaultdict(list)
    for key, digest in exact.items():
        by_hash[digest].append(key)
    for keys in by_hash.values():
        if len(keys) > 1:
            found.append(problem("duplicate_image", keys, "same bytes as"))
    keys = list(perceptual)
    pairs = [(a, b) for a, b in _near_pairs(keys, [perceptual[k] for k in keys], max_distance)
             if exact.get(keys[a]) is None or exact.get(keys[a]) != exact.get(keys[b])]
    for cluster in _clusters(len(keys), pairs):
        found.append(problem("near_duplicate_image", [keys[i] for i in cluster],
                             f"nearly the same picture (pHash within {max_distance} bits) as"))
    return [p for p in found if p is not None]


def audit_faces(root: str | os.PathLike, format: str, split: str | None = None, check_images: bool = True, *,
                n_points: int | None = None, near_duplicate_distance: int = NEAR_DUPLICATE_DISTANCE,
                ) -> FaceAuditReport:
    """Audit one face dataset (all splits by default) and return every problem found.

    Args:
        root, format, split, n_points: as for :func:`facekd.formats.load_faces`.
        check_images: decode every image (truncated/corrupt files) and compare perceptual hashes; without
            it only the annotations, image headers and exact file hashes are checked.
        near_duplicate_distance: largest pHash Hamming distance (of 64 bits) counted as a near duplicate.

    Raises:
        DataError: ``root`` itself is missing (nothing to audit).
        ConfigError: unknown format or split.
    """
    get_format(format)
    subjects_known = format == "folder" and has_subject_file(root)
    report = FaceAuditReport(str(root), format, split, subjects_known)
    for item in scan_faces(root, format, split, n_points=n_points):
        if isinstance(item, FaceRecord):
            report.records.append(item)
        else:
            report.problems.append(Problem("blocking", item.kind, item.path, item.detail,
                                           (item.record_id,) if item.record_id else ()))
    exact, perceptual = _image_hashes(report.records, check_images, report.problems)
    report.problems += _duplicate_problems(report.records, exact, perceptual, subjects_known,
                                           near_duplicate_distance)
    counts = _counts(report.records)
    report.images, report.faces, report.subjects = counts["images"], counts["faces"], counts["subjects"]
    by_subset: dict[str, list[FaceRecord]] = defaultdict(list)
    for record in report.records:
        by_subset[record.subset or "all"].append(record)
    report.per_subset = {name: _counts(group) for name, group in sorted(by_subset.items())}
    if not report.records and not report.blocking:
        report.problems.append(Problem("blocking", "no_faces", str(root),
                                       f"no annotated face found for format {format!r}"
                                       + (f", split {split!r}" if split else "")))
    expected = FORMATS[format].expected or {}
    for subset in _covered_subsets(format, split):
        found = report.per_subset.get(subset, {}).get("faces", 0)
        if found != expected[subset]:
            report.problems.append(Problem("warning", "count_mismatch", str(root),
                                           f"subset {subset!r} has {found} good faces; the public release "
                                           f"has {expected[subset]} (partial download or a modified copy?)"))
    return report


def integrity_gate(report: FaceAuditReport, exclude: bool) -> list[str]:
    """Stop on blocking problems, or return the ids of the faces to leave out.

    Args:
        report: from :func:`audit_faces`.
        exclude: False: raise when anything is blocking. True: return the record ids of every blocking
            problem (sorted), so the caller trains on ``report.records`` without them.

    Raises:
        DataError: blocking problems and ``exclude`` is False, or blocking problems that concern no
            particular face (a missing folder or annotation file, a bad ``subjects.csv`` header).
    """
    blocking = report.blocking
    if not blocking:
        return []
    if exclude:
        whole = [p for p in blocking if not p.record_ids]
        if not whole:
            return sorted({i for p in blocking for i in p.record_ids})
        blocking, lead = whole, "cannot be fixed by leaving faces out"
    else:
        lead = "fix them or exclude the bad faces"
    kinds = ", ".join(f"{n} {kind}" for kind, n in Counter(p.kind for p in blocking).most_common())
    lines = [f"{report.root}: {len(blocking)} blocking data problem(s) ({kinds}); {lead}:"]
    lines += [f"  {p.kind}: {p.path}: {p.detail}" for p in blocking[:_SHOWN]]
    if len(blocking) > _SHOWN:
        lines.append(f"  ... and {len(blocking) - _SHOWN} more (see the audit report)")
    raise DataError("\n".join(lines))
