"""``data.format: volumes``: a folder of OCT volumes (DICOM OPT, vendor exports) and a labels CSV.

Every file under the root is a volume (see :mod:`medkd.data.volumes` for the formats and their readers), except
the labels CSV, notes (``.csv``, ``.txt``, ``.md``, ``.json``) and the TIFF B-scans beside a HEYEX XML export.
Each volume gives one record per selected B-scan (``data.bscans``: ``all``, ``central``, ``central_k: K``,
``every: N``): ``image_id = "<relative path>#<frame>"``, ``patient`` = the file's own patient id (hashed by
``patient_key`` before anything is written), ``eye`` = laterality, ``visit`` = acquisition date.

Labels (``labels.csv`` in the root, or ``data.labels``) are keyed either by file::

    file,label
    clinic_a/scan_0001.dcm,CNV

or by patient and, optionally, visit date and eye (the patient id as the device stored it)::

    patient,visit,eye,label
    PAT-001,2024-03-12,OD,CNV

A row without visit or eye applies to every visit or eye of that patient; a volume matched by rows with different
labels, or by none, is a blocking problem naming the file. Problem messages never quote patient ids.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ._files import clean_relative, read_csv_rows
from ._scan import Scan, resolve_classes
from .records import IMAGE_SUFFIXES, OCTDataset, OCTRecord
from .volumes import (Selection, VolumeInfo, VolumeReadError, parse_selection, read_volume_info, select_frames,
                      volume_kind)

__all__ = ["VolumeOptions", "scan_volumes", "load_volumes", "LABELS_NAME"]

LABELS_NAME = "labels.csv"
_NOTES = frozenset({".csv", ".txt", ".md", ".json"})
EYES = ("OD", "OS")


@dataclass
class VolumeOptions:
    """How a volume folder becomes records: B-scan selection, labels file, patient key (e.g. a salted hash)."""

    selection: Selection | str | dict | None = None
    labels: str | os.PathLike | None = None
    patient_key: Callable[[str], str] | None = None
    require_labels: bool = True
    infos: dict[str, VolumeInfo] = field(default_factory=dict)  # filled by the scan: relative path -> info


def _walk(root: Path, labels_file: Path | None) -> tuple[list[str], list[str]]:
    """``(volume files, unsupported files)`` relative to ``root``, sorted."""
    volumes, unsupported = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = [n for n in sorted(filenames) if not n.startswith(".")]
        has_xml = any(n.lower().endswith(".xml") for n in names)
        for name in names:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            suffix = path.suffix.lower()
            if (labels_file is not None and path.absolute() == labels_file) or suffix in _NOTES:
                continue
            if has_xml and suffix in IMAGE_SUFFIXES:
                continue  # the B-scans and fundus image of a HEYEX XML export, read through the XML
            (volumes if volume_kind(path) else unsupported).append(rel)
    return volumes, unsupported


class _Labels:
    """The labels CSV, keyed by file or by patient[/visit][/eye]; problems go to the scan with line numbers."""

    def __init__(self, scan: Scan, path: Path, classes: Sequence[str] | None):
        self.path, self.scan = path, scan
        header, self.rows = read_csv_rows(path)
        self.lookup = {h.lower(): h for h in header}
        self.by_file = "file" in self.lookup
        self.ok = "label" in self.lookup and (self.by_file or "patient" in self.lookup)
        if not self.ok:
            scan.add("blocking", "missing_columns", path, f"expected columns file,label or patient,label[,visit]"
                                                          f"[,eye]; found {header}", line=1)
            return
        found: dict[str, str] = {}
        for _, row in self.rows:
            value = row[self.lookup["label"]]
            if value:
                found.setdefault(value.upper(), value)
        scan.classes = resolve_classes(classes, sorted(found.values()))
        self.canon = {c.upper(): c for c in scan.classes}
        self.used: set[int] = set()
        self.entries: list[tuple[int, dict[str, str], str]] = []
        for line, row in self.rows:
            get = {k: row[self.lookup[k]] if k in self.lookup else "" for k in ("file", "patient", "visit", "eye",
                                                                              "label")}
            label = self.canon.get(get["label"].upper())
            if not get["label"]:
                scan.add("blocking", "empty_value", path, "empty 'label'", line)
                continue
            if label is None:
                scan.add("blocking", "unknown_class", path, f"label {get['label']!r} is not one of {scan.classes}",
                         line)
                continue
            key = "file" if self.by_file else "patient"
            if not get[key]:
                scan.add("blocking", "empty_value", path, f"empty {key!r}", line)
                continue
            if get["eye"] and get["eye"].upper() not in EYES:
                scan.add("blocking", "bad_value", path, f"eye {get['eye']!r} is not OD or OS", line)
                continue
            if self.by_file:
                rel, why = clean_relative(get["file"])
                if rel is None:
                    scan.add("blocking", "bad_path", path, f"file: {why}", line)
                    continue
                get["file"] = rel.lower()
            self.entries.append((line, get, label))

    def label_for(self, rel: str, info: VolumeInfo) -> str | None:
        """The volume's label, or ``None`` after adding the problem (no row, or rows that disagree)."""
        if self.by_file:
            hits = [(line, label) for line, get, label in self.entries if get["file"] == rel.lower()]
        else:
            hits = [(line, label) for line, get, label in self.entries
                    if info.patient_id is not None and get["patient"] == info.patient_id
                    and (not get["visit"] or get["visit"][:10] == (info.visit_date or ""))
                    and (not get["eye"] or get["eye"].upper() == (info.laterality or ""))]
        self.used.update(line for line, _ in hits)
        labels = sorted({label for _, label in hits})
        if len(labels) > 1:
            lines = ", ".join(str(line) for line, _ in hits)
            self.scan.add("blocking", "label_conflict", self.path,
                          f"{rel!r} is labelled {' and '.join(labels)} by lines {lines}", image_id=rel)
            return None
        if not labels:
            key = "file" if self.by_file else "patient/visit/eye (the file's own patient id and date)"
            self.scan.add("blocking", "missing_label", self.scan.root / rel,
                          f"no row of {self.path.name} matches this volume by {key}", image_id=rel)
            return None
        return labels[0]

    def unused(self) -> None:
        for line, get, _ in self.entries:
            if line not in self.used:
                what = f"file {get['file']!r} is not a readable volume under {self.scan.root}" if self.by_file else \
                    "no volume matches this row's patient/visit/eye"
                self.scan.add("blocking" if self.by_file else "warning",
                              "missing_file" if self.by_file else "row_without_volume", self.path, what, line)


def scan_volumes(root: str | Path, classes: Sequence[str] | None = None,
                 options: VolumeOptions | None = None) -> Scan:
    """Index a folder of volumes without raising: every problem is collected in ``Scan.problems``."""
    options = options or VolumeOptions()
    selection = parse_selection(options.selection)
    root = Path(root).absolute()
    scan = Scan("volumes", root, list(classes or []))
    if not root.is_dir():
        scan.add("blocking", "missing_root", root, "data root is not a folder of volumes")
        return scan
    labels_file = Path(options.labels) if options.labels is not None else root / LABELS_NAME
    labels_file = (labels_file if labels_file.is_absolute() else root / labels_file).absolute()
    labels = None
    if labels_file.is_file():
        labels = _Labels(scan, labels_file, classes)
    elif options.require_labels:
        scan.add("blocking", "missing_csv", labels_file, "labels CSV not found (file,label or patient,label[,visit]"
                                                         "[,eye]; see data_cards/dicom_and_vendor.md)")
    volumes, unsupported = _walk(root, labels_file)
    for rel in unsupported:
        scan.add("blocking", "unsupported_file", root / rel, "not a supported volume format (DICOM OPT, .vol, "
                 "HEYEX .xml, .e2e, .fds, .fda, .img)", image_id=rel)
    if not volumes:
        scan.add("blocking", "no_volumes", root, "no volume files found")
    key = options.patient_key or (lambda patient: patient)
    seen_uids: dict[str, str] = {}
    readers: Counter = Counter()
    for rel in volumes:
        try:
            info = read_volume_info(root / rel)
        except VolumeReadError as exc:
            scan.add("blocking", "unreadable_volume", root / rel, exc.reason, image_id=rel)
            continue
        options.infos[rel] = info
        readers[f"{info.kind} ({info.reader})"] += 1
        if info.patient_id is None:
            scan.add("blocking", "missing_patient", root / rel, "the file holds no patient id, so its patient "
                     "cannot be kept in one fold", image_id=rel)
            continue
        if info.sop_instance_uid:
            if info.sop_instance_uid in seen_uids:
                scan.add("blocking", "duplicate_volume", root / rel,
                         f"same SOP instance UID as {seen_uids[info.sop_instance_uid]!r}", image_id=rel)
                continue
            seen_uids[info.sop_instance_uid] = rel
        label = labels.label_for(rel, info) if labels is not None and labels.ok else None
        if label is None and (labels is not None or options.require_labels):
            continue
        for frame in select_frames(info.n_frames, selection):
            image_id = f"{rel}#{frame:03d}"
            scan.listed_in[image_id] = rel
            scan.records.append(OCTRecord(image_id=image_id, path=root / rel, label=label or "", patient=key(
                info.patient_id), eye=info.laterality, visit=info.visit_date, frame=frame))
    if labels is not None and labels.ok:
        labels.unused()
        for name in scan.classes:
            if not any(r.label == name for r in scan.records):
                scan.add("blocking", "empty_class", labels_file, f"no B-scan of class {name!r}")
    scan.notes.append(f"{len(options.infos)} volume(s) read: "
                      + ", ".join(f"{n} {k}" for k, n in sorted(readers.items())))
    scan.notes.append(f"B-scan selection {selection.to_dict()}: {len(scan.records)} B-scan(s) kept")
    return scan


def load_volumes(root: str | Path, classes: Sequence[str] | None = None,
                 options: VolumeOptions | None = None) -> OCTDataset:
    """Load a volume folder (see the module docstring); raise :class:`~kdcore.errors.DataError` on problems.

    Example:
        >>> ds = load_volumes("clinic_export", options=VolumeOptions(selection={"central_k": 5}))  # doctest: +SKIP
    """
    options = options or VolumeOptions()
    dataset = scan_volumes(root, classes, options).to_dataset()
    dataset.meta["bscan_selection"] = parse_selection(options.selection).to_dict()
    return dataset
