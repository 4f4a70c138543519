"""Any OCT dataset described by a CSV manifest: ``path,label,patient[,eye][,visit][,split]``.

``root`` is either the manifest file itself (its folder is the data root) or a folder holding
``manifest.csv``. ``path`` is relative to the data root (absolute paths and ``..`` are refused) and matched
case-insensitively like the NEH CSV. ``patient`` must already be a globally unique patient key. The optional
``split`` column (``train``/``test``/``val``) fills ``official_split``. Other columns are allowed and ignored
(named in the notes), so a manifest can carry its own bookkeeping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ._files import FileIndex, clean_relative, read_csv_rows
from ._scan import Scan, resolve_classes
from .records import OCTDataset, OCTRecord

__all__ = ["MANIFEST_NAME", "REQUIRED_COLUMNS", "OPTIONAL_COLUMNS", "load_manifest", "scan_manifest"]

MANIFEST_NAME = "manifest.csv"
REQUIRED_COLUMNS = ("path", "label", "patient")
OPTIONAL_COLUMNS = ("eye", "visit", "split")
SPLITS = ("train", "test", "val")


def _locate(root: Path) -> tuple[Path, Path]:
    """``(data root, manifest file)`` for a manifest path or a folder holding ``manifest.csv``."""
    if root.is_file():
        return root.parent, root
    return root, root / MANIFEST_NAME


def scan_manifest(root: str | Path, classes: Sequence[str] | None = None) -> Scan:
    """Index a manifest without raising: every problem is collected in ``Scan.problems``."""
    data_root, csv_file = _locate(Path(root).absolute())
    scan = Scan("manifest", data_root, list(classes or []))
    if not csv_file.is_file():
        scan.add("blocking", "missing_csv", csv_file, "manifest not found (give the CSV or a folder with manifest.csv)")
        return scan
    header, rows = read_csv_rows(csv_file)
    lookup = {h.lower(): h for h in header}
    missing = [c for c in REQUIRED_COLUMNS if c not in lookup]
    if missing:
        scan.add("blocking", "missing_columns", csv_file,
                 f"missing column(s) {', '.join(map(repr, missing))}; found {header}", line=1)
        return scan
    extra = [h for h in header if h.lower() not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if extra:
        scan.notes.append(f"{csv_file.name}: extra column(s) ignored: {', '.join(extra)}")
    labels_seen = [row[lookup["label"]] for _, row in rows if row[lookup["label"]]]
    found: dict[str, str] = {}
    for value in labels_seen:
        found.setdefault(value.upper(), value)
    names = resolve_classes(classes, sorted(found.values()))
    scan.classes = names
    canon = {c.upper(): c for c in names}
    index = FileIndex(data_root)
    first_line: dict[str, int] = {}
    labelled: set[str] = set()

    for line, row in rows:
        get = {c: row[lookup[c]] if c in lookup else "" for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS}
        empty = [c for c in REQUIRED_COLUMNS if not get[c]]
        if empty:
            scan.add("blocking", "empty_value", csv_file, f"empty {', '.join(map(repr, empty))}", line)
            continue
        label = canon.get(get["label"].upper())
        if label is None:
            scan.add("blocking", "unknown_class", csv_file, f"label {get['label']!r} is not one of {names}", line)
            continue
        labelled.add(label)
        if label != get["label"]:
            scan.notes.append(f"{csv_file.name}:{line}: label {get['label']!r} read as {label!r}")
        split = get["split"].lower() or None
        if split is not None and split not in SPLITS:
            scan.add("blocking", "bad_value", csv_file, f"split {get['split']!r} is not one of {SPLITS}", line)
            continue
        rel, why = clean_relative(get["path"])
        if rel is None:
            scan.add("blocking", "bad_path", csv_file, f"path: {why}", line)
            continue
        match = index.find(rel)
        if isinstance(match, list):
            scan.add("blocking", "ambiguous_path", csv_file,
                     f"path {get['path']!r} matches several files that differ only in case: {match}", line)
            continue
        if match is None:
            scan.add("blocking", "missing_file", csv_file, f"path {get['path']!r}: no such image under {data_root}",
                     line)
            continue
        escape = index.escapes(match.rel)
        if escape:
            scan.add("blocking", "bad_path", csv_file, f"path: {escape}", line)
            continue
        if match.case_mismatch:
            scan.add("warning", "case_mismatch", csv_file,
                     f"path {get['path']!r} matched {match.rel!r} on disk only ignoring letter case", line, match.rel)
        if match.rel in first_line:
            scan.add("blocking", "duplicate_row", csv_file,
                     f"{match.rel!r} is already listed on line {first_line[match.rel]}", line, match.rel)
            continue
        first_line[match.rel] = line
        scan.listed_in[match.rel] = f"{csv_file}:{line}"
        scan.records.append(OCTRecord(image_id=match.rel, path=data_root / match.rel, label=label,
                                      patient=get["patient"], patient_class=None, eye=get["eye"] or None,
                                      visit=get["visit"] or None, official_split=split))

    for name in names:
        if name not in labelled:
            scan.add("blocking", "empty_class", csv_file, f"no image of class {name!r}")
    train = {r.patient for r in scan.records if r.official_split in ("train", "val")}
    scan.overlap = train & {r.patient for r in scan.records if r.official_split == "test"}
    if scan.overlap:
        scan.notes.append(f"{len(scan.overlap)} patient(s) appear in both the train and test splits")
    return scan


def load_manifest(root: str | Path, classes: Sequence[str] | None = None) -> OCTDataset:
    """Load a manifest dataset (see the module docstring); raise :class:`~kdcore.errors.DataError` on problems.

    Example:
        >>> ds = load_manifest("my_scans/manifest.csv", classes=["NORMAL", "AMD"])  # doctest: +SKIP
    """
    return scan_manifest(root, classes).to_dataset()
