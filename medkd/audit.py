"""Dataset audit: everything that would make an OCT result wrong, found in one pass and reported together.

Structural problems come from the format scanners (missing files, CSV rows without files, case mismatches,
label conflicts, empty classes); the audit adds what needs the pixels: unreadable or truncated images, exact
duplicates (file hash) and near-duplicates (perceptual hash, then a thumbnail check) that sit under different
patients (leakage between folds), train/test patient overlap and classes with too few patients for k folds.

Example:
    >>> report = audit_oct("data/neh", "neh")            # doctest: +SKIP
    >>> excluded = integrity_gate(report, exclude=True)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import cv2
import imagehash
import numpy as np
from PIL import Image

from kdcore.errors import ConfigError, DataError
from kdcore.findings import AuditFindings
from kdcore.images import ImageReadError, read_image

from .data._scan import Scan
from .data.load import scan_oct_dataset
from .data.records import OCTRecord, Problem, raise_blocking
from .data.volumes import read_frames

__all__ = ["AuditReport", "Problem", "audit_oct", "integrity_gate", "EXCLUDABLE_KINDS"]

EXCLUDABLE_KINDS = frozenset({"unreadable_image"})  # the only problems a run may drop images for
THUMB = 32  # thumbnail side for confirming perceptual-hash candidates


@dataclass
class AuditReport(AuditFindings):
    """Counts and problems of one dataset; ``blocking`` problems make results untrustworthy.

    ``patients_per_class`` counts patients by diagnosis where the format records it (NEH ``Class``) and
    otherwise by image label (a patient with CNV and DRUSEN images counts for both).
    """

    root: str
    format: str
    subset: str | None
    mode: str
    classes: list[str]
    n_images: int = 0
    images_per_class: dict[str, int] = field(default_factory=dict)
    patients_per_class: dict[str, int] = field(default_factory=dict)
    images_per_patient: dict[str, int] = field(default_factory=dict)
    images_per_eye: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def kinds(self, severity: str | None = None) -> Counter:
        """How many problems of each kind (optionally of one severity)."""
        return Counter(p.kind for p in self.problems if severity is None or p.severity == severity)

    def to_dict(self) -> dict:
        """JSON-ready: scalar ``counts`` first (what reports show), then every problem and per-patient count."""
        per_patient = list(self.images_per_patient.values())
        return {
            "root": self.root, "format": self.format, "subset": self.subset, "mode": self.mode,
            "classes": list(self.classes),
            "counts": {
                "images": self.n_images, "patients": len(per_patient),
                "per_class": {c: {"images": self.images_per_class.get(c, 0),
                                  "patients": self.patients_per_class.get(c, 0)} for c in self.classes},
                "per_eye": {c: dict(e) for c, e in self.images_per_eye.items()},
                "images_per_patient": ({"min": min(per_patient), "median": float(np.median(per_patient)),
                                        "max": max(per_patient)} if per_patient else {}),
            },
            "n_blocking": len(self.blocking), "n_warnings": len(self.warnings),
            "problems_by_kind": dict(self.kinds()),
            "problems": [p.to_dict() for p in self.problems],
            "notes": list(self.notes),
            "patients": [{"patient": k, "images": v} for k, v in self.images_per_patient.items()],
        }


def audit_oct(root: str | Path, format: str, subset: str | None = "all", near_duplicates: bool = True,
              hash_threshold: int = 6, thumb_threshold: float = 3.0, mode: Literal["cv", "official"] = "cv",
              n_folds: int | None = None, classes: Sequence[str] | None = None,
              volumes: Any = None) -> AuditReport:
    """Audit one dataset; never stops at the first problem (only an unusable root or format raises).

    Args:
        subset: NEH only (``"all"`` by default: every B-scan is checked); ignored for other formats.
        near_duplicates: compare perceptual hashes (``imagehash.phash``) across patients.
        hash_threshold: largest pHash Hamming distance (of 64 bits) for a near-duplicate candidate.
        thumb_threshold: candidates are confirmed when their mean-centred 32x32 thumbnails differ by at most
            this many grey levels on average (re-encoded or resized copies: about 1; different eyes: 8 or more).
        mode: ``"official"`` makes train/test patient overlap blocking (official split protocol), ``"cv"`` a warning.
        n_folds: when given, classes with fewer patients than folds are blocking.
        volumes: ``format="volumes"`` only: :class:`~medkd.data.volume_scan.VolumeOptions`.
    """
    if mode not in ("cv", "official"):
        raise ConfigError(f"mode: expected 'cv' or 'official', got {mode!r}")
    subset = subset if format == "neh" else None
    try:
        scan = scan_oct_dataset(root, format, subset, classes, volumes)  # type: ignore[arg-type]
    except DataError as exc:  # an unreadable CSV: nothing else can be checked
        scan = Scan(format, Path(root).absolute(), list(classes or []))
        scan.add("blocking", "unreadable_csv", root, str(exc))
    report = AuditReport(root=str(scan.root), format=format, subset=subset, mode=mode, classes=list(scan.classes),
                         problems=list(scan.problems), notes=list(scan.notes))
    _count(report, scan.records)
    fingerprints = _fingerprint(report, scan.records, near_duplicates)
    _exact_duplicates(report, fingerprints)
    if near_duplicates:
        _near_duplicates(report, fingerprints, hash_threshold, thumb_threshold)
    _overlap(report, scan, mode)
    present = [c for c, n in report.images_per_class.items() if n]
    if len(present) < 2 and report.n_images:
        # A classifier of one class scores 1.0 on everything: a result, but a wrong one.
        report.problems.append(Problem("blocking", "too_few_classes", report.root,
                                       f"images of {len(present)} class(es) only ({', '.join(present)}); "
                                       "a classifier needs at least two"))
    if n_folds is not None:
        for name, n in report.patients_per_class.items():
            if n < n_folds:
                report.problems.append(Problem("blocking", "too_few_patients", report.root,
                                               f"class {name!r} has {n} patient(s), fewer than {n_folds} folds"))
    return report


def integrity_gate(report: AuditReport, exclude: bool) -> list[str]:
    """Stop on blocking problems, or return the unreadable image ids to drop when ``exclude`` is true.

    Only unreadable images can be excluded; structural problems (missing files, leakage, label conflicts...)
    always raise :class:`~kdcore.errors.DataError`, listing the first 20 and a count.
    """
    blocking = report.blocking
    if not blocking:
        return []
    what = f"audit of {report.format} dataset at {report.root}"
    if not exclude:
        hint = " (a recipe with data.on_bad_image: exclude leaves unreadable images out)" \
            if any(p.kind in EXCLUDABLE_KINDS for p in blocking) else ""
        raise_blocking(blocking, what + hint)
    raise_blocking([p for p in blocking if p.kind not in EXCLUDABLE_KINDS or p.image_id is None], what)
    return sorted({p.image_id for p in blocking if p.image_id is not None})


@dataclass
class _Print:
    record: OCTRecord
    digest: str
    phash: int | None = None
    thumb: np.ndarray | None = None


def _count(report: AuditReport, records: list[OCTRecord]) -> None:
    report.n_images = len(records)
    images = Counter(r.label for r in records)
    patients: dict[str, set[str]] = defaultdict(set)
    eyes: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        # NEH knows each patient's diagnosis; elsewhere a patient counts for every label it has images of
        patients[r.patient_class or r.label].add(r.patient)
        eyes[r.label][r.eye or "unknown"] += 1
    report.images_per_class = {c: images.get(c, 0) for c in report.classes}
    report.patients_per_class = {c: len(patients.get(c, ())) for c in report.classes}
    report.images_per_eye = {c: dict(sorted(eyes[c].items())) for c in report.classes}
    report.images_per_patient = dict(sorted(Counter(r.patient for r in records).items()))


def _fingerprint(report: AuditReport, records: list[OCTRecord], perceptual: bool) -> list[_Print]:
    """Decode every image once: unreadable ones become problems, readable ones get hashes."""
    prints = []
    for record in records:
        try:
            if record.frame is None:
                data = record.path.read_bytes()
                gray = read_image(record.path, "gray")
            else:  # a B-scan of a volume: its pixels are what can repeat elsewhere
                gray = read_frames(record.path)[record.frame]  # in order: each volume is decoded once
                data = gray.tobytes()
        except ImageReadError as exc:
            report.problems.append(Problem("blocking", "unreadable_image", str(record.path), exc.reason,
                                           image_id=record.image_id))
            continue
        except OSError as exc:
            report.problems.append(Problem("blocking", "unreadable_image", str(record.path),
                                           f"cannot read ({exc.strerror or exc})", image_id=record.image_id))
            continue
        item = _Print(record, hashlib.blake2b(data, digest_size=16).hexdigest())
        if perceptual:
            bits = imagehash.phash(Image.fromarray(gray)).hash.flatten()
            item.phash = int.from_bytes(np.packbits(bits).tobytes(), "big")
            item.thumb = cv2.resize(gray, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
        prints.append(item)
    return prints


def _exact_duplicates(report: AuditReport, prints: list[_Print]) -> None:
    groups: dict[str, list[_Print]] = defaultdict(list)
    for item in prints:
        groups[item.digest].append(item)
    for members in groups.values():
        if len(members) < 2:
            continue
        records = [m.record for m in members]
        listing = ", ".join(f"{r.image_id} ({r.patient}, {r.label})" for r in records[:5])
        labels, patients = {r.label for r in records}, {r.patient for r in records}
        if len(labels) > 1:
            report.problems.append(Problem("blocking", "label_conflict", str(records[1].path),
                                           f"identical image with different labels: {listing}",
                                           image_id=records[1].image_id))
        if len(patients) > 1:
            report.problems.append(Problem("blocking", "duplicate_image", str(records[1].path),
                                           f"byte-identical image under {len(patients)} patients (leakage between "
                                           f"folds): {listing}", image_id=records[1].image_id))
        elif len(labels) == 1:
            report.problems.append(Problem("warning", "duplicate_image", str(records[1].path),
                                           f"byte-identical images of one patient: {listing}",
                                           image_id=records[1].image_id))


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    table = np.array([bin(i).count("1") for i in range(256)], np.uint8)
    return table[values.view(np.uint8).reshape(*values.shape, 8)].sum(axis=-1)


def _near_duplicates(report: AuditReport, prints: list[_Print], hash_threshold: int, thumb_threshold: float) -> None:
    """Visually near-identical images of different patients, one problem per patient pair."""
    unique: dict[str, _Print] = {}
    for item in prints:  # byte-identical copies are already reported
        unique.setdefault(item.digest, item)
    items = list(unique.values())
    if len(items) < 2:
        return
    hashes = np.array([i.phash for i in items], dtype=np.uint64)
    patients = np.array([i.record.patient for i in items], dtype=object)
    thumbs = np.stack([i.thumb for i in items]).astype(np.float32)
    thumbs -= thumbs.mean(axis=(1, 2), keepdims=True)  # brightness changes do not hide a copy
    pairs: dict[tuple[str, str], list[tuple[int, int, int, float]]] = defaultdict(list)
    chunk = max(1, 4_000_000 // len(items))
    for start in range(0, len(items), chunk):
        block = _popcount(hashes[start:start + chunk, None] ^ hashes[None, :])
        rows, cols = np.nonzero(block <= hash_threshold)
        rows = rows + start
        keep = (cols > rows) & (patients[rows] != patients[cols])
        for a, b in zip(rows[keep], cols[keep]):
            diff = float(np.abs(thumbs[a] - thumbs[b]).mean())
            if diff <= thumb_threshold:
                key = tuple(sorted((patients[a], patients[b])))
                pairs[key].append((int(a), int(b), int(block[a - start, b]), diff))
    for (pa, pb), found in sorted(pairs.items()):
        a, b, distance, diff = min(found, key=lambda f: (f[2], f[3]))
        ra, rb = items[a].record, items[b].record
        report.problems.append(Problem(
            "blocking", "near_duplicate", str(rb.path),
            f"patients {pa!r} and {pb!r} share {len(found)} near-identical image pair(s) (leakage between folds), "
            f"e.g. {ra.image_id} ~ {rb.image_id} (pHash distance {distance}, thumbnail difference {diff:.1f})",
            image_id=rb.image_id))


def _overlap(report: AuditReport, scan: Scan, mode: str) -> None:
    has_split = any(r.official_split for r in scan.records)
    if mode == "official" and not has_split and scan.records:
        report.problems.append(Problem("blocking", "no_official_split", report.root, "mode='official' needs "
                                       "official train/test folders (or a manifest split column)"))
    severity = "blocking" if mode == "official" else "warning"
    consequence = ("the official test set shares patients with training" if mode == "official" else
                   "harmless for patient-grouped cross-validation, leakage for the official split")
    for patient in sorted(scan.overlap):
        splits = Counter(r.official_split for r in scan.records if r.patient == patient)
        example = next(r for r in scan.records if r.patient == patient and r.official_split == "test")
        report.problems.append(Problem(severity, "train_test_overlap", str(example.path),
                                       f"patient {patient!r} has {splits.get('train', 0) + splits.get('val', 0)} "
                                       f"training and {splits['test']} test image(s): {consequence}",
                                       image_id=example.image_id))
