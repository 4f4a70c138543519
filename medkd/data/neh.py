"""Noor Eye Hospital "NEH_UT_2021RetinalOCTDataset" (Sotoudeh-Paima et al. 2022): NORMAL / DRUSEN / CNV.

Layout: ``{NORMAL,DRUSEN,CNV}/<case>/<OD|OS>/<NNN>_<Label>.{jpg,tif}`` plus ``data_information.csv`` with the
columns ``Patient ID, Class, Label, Directory, Eye``; ``Directory`` is the image path relative to the folder
holding the class folders (e.g. ``CNV/12/OD/004_CNV.jpg``). Case numbers restart in every class folder, so the
patient key is ``"<CLASS>/<case>"``. ``Class`` is the patient's diagnosis, ``Label`` the B-scan's own label:
``subset="worst_case"`` keeps the B-scans whose label equals the patient class (12,649 in the real data, what
KD-OCT used), ``subset="all"`` keeps all of them (16,822) with their own labels.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Literal, Sequence

from kdcore.errors import ConfigError

from ._files import FileIndex, Match, clean_relative, read_csv_rows
from ._scan import Scan, resolve_classes
from .records import OCTDataset, OCTRecord, Problem

__all__ = ["NEH_CLASSES", "NEH_COLUMNS", "NEH_CSV_NAME", "NEH_FOLDER_NAME", "load_neh", "scan_neh", "find_neh_csv"]

NEH_CLASSES = ("NORMAL", "DRUSEN", "CNV")  # KD-OCT's class indices 0, 1, 2
NEH_COLUMNS = ("Patient ID", "Class", "Label", "Directory", "Eye")
NEH_CSV_NAME = "data_information.csv"
NEH_FOLDER_NAME = "NEH_UT_2021RetinalOCTDataset"
EYES = ("OD", "OS")
_FILE_LABEL = re.compile(r"^\d+_([A-Za-z]+)$")

Subset = Literal["worst_case", "all"]


def _child(folder: Path, name: str) -> Path | None:
    """``folder/name`` matched case-insensitively (``None`` when absent)."""
    if not folder.is_dir():
        return None
    for entry in sorted(folder.iterdir()):
        if entry.name.lower() == name.lower():
            return entry
    return None


def find_neh_csv(root: Path) -> Path | None:
    """``data_information.csv`` in ``root`` or, for KD-OCT's layout (root = the image folder), in its parent."""
    return _child(root, NEH_CSV_NAME) or _child(root.parent, NEH_CSV_NAME)


def _image_root(root: Path, classes: Sequence[str]) -> Path:
    """The folder holding the class folders: ``root`` itself or its ``NEH_UT_2021RetinalOCTDataset`` child."""
    if any(_child(root, c) for c in classes):
        return root
    return _child(root, NEH_FOLDER_NAME) or root


def _patient_number(text: str) -> str:
    """``"012"``, ``"12"`` and ``"12.0"`` (a spreadsheet round trip) are the same case number."""
    match = re.fullmatch(r"0*(\d+)(?:\.0+)?", text.strip())
    return str(int(match.group(1))) if match else text.strip()


def scan_neh(root: str | Path, subset: Subset = "worst_case", classes: Sequence[str] | None = None,
             csv_path: str | Path | None = None) -> Scan:
    """Index an NEH tree without raising: every problem is collected in ``Scan.problems``."""
    if subset not in ("worst_case", "all"):
        raise ConfigError(f"subset: expected 'worst_case' or 'all', got {subset!r}")
    root = Path(root).absolute()
    names = resolve_classes(classes, NEH_CLASSES)
    canon = {c.upper(): c for c in names}
    image_root = _image_root(root, names)
    scan = Scan("neh", image_root, names)
    if not root.is_dir():
        scan.add("blocking", "missing_root", root, "data root is not a folder")
        return scan
    csv_file = Path(csv_path).absolute() if csv_path is not None else find_neh_csv(root)
    if csv_file is None or not csv_file.is_file():
        scan.add("blocking", "missing_csv", csv_file or root / NEH_CSV_NAME,
                 f"{NEH_CSV_NAME} not found in {root} or its parent")
        return scan
    header, rows = read_csv_rows(csv_file)
    lookup = {h.lower(): h for h in header}
    missing = [c for c in NEH_COLUMNS if c.lower() not in lookup]
    if missing:
        scan.add("blocking", "missing_columns", csv_file,
                 f"missing column(s) {', '.join(map(repr, missing))}; found {header}", line=1)
        return scan
    col = {c: lookup[c.lower()] for c in NEH_COLUMNS}
    index = FileIndex(image_root)
    seen: dict[str, tuple[int, tuple]] = {}
    rows_per_class: dict[str, int] = defaultdict(int)
    classes_per_number: dict[str, set[str]] = defaultdict(set)

    for line, row in rows:
        values = {c: row[col[c]] for c in NEH_COLUMNS}
        empty = [c for c in ("Patient ID", "Class", "Label", "Directory") if not values[c]]
        if empty:
            scan.add("blocking", "empty_value", csv_file, f"empty {', '.join(map(repr, empty))}", line)
            continue
        patient_class = canon.get(values["Class"].upper())
        label = canon.get(values["Label"].upper())
        bad = [(k, values[k]) for k, v in (("Class", patient_class), ("Label", label)) if v is None]
        if patient_class is not None:
            rows_per_class[patient_class] += 1
        if bad:
            for key, value in bad:
                scan.add("blocking", "unknown_class", csv_file,
                         f"{key} {value!r} is not one of the classes {names}", line)
            continue
        eye = values["Eye"].upper() or None
        if eye is not None and eye not in EYES:
            scan.add("blocking", "bad_value", csv_file, f"Eye {values['Eye']!r} is not OD or OS", line)
            continue
        match = _resolve(scan, csv_file, line, index, values["Directory"], canon)
        if match is None:
            continue
        number = _patient_number(values["Patient ID"])
        key = (patient_class, label, number, eye)
        if match.rel in seen:
            first_line, first_key = seen[match.rel]
            if first_key == key:
                scan.add("warning", "duplicate_row", csv_file,
                         f"repeats line {first_line} for {match.rel!r}; the repeat is ignored", line, match.rel)
            else:
                scan.add("blocking", "label_conflict", csv_file,
                         f"{match.rel!r} is also listed on line {first_line} with different values "
                         f"(Class/Label/Patient ID/Eye {first_key} vs {key})", line, match.rel)
            continue
        seen[match.rel] = (line, key)
        scan.listed_in[match.rel] = f"{csv_file}:{line}"
        if not _consistent_with_path(scan, csv_file, line, match.rel, patient_class, label, number, eye):
            continue
        classes_per_number[number].add(patient_class)
        if subset == "worst_case" and label != patient_class:
            continue
        scan.records.append(OCTRecord(image_id=match.rel, path=image_root / match.rel, label=label,
                                      patient=f"{patient_class}/{number}", patient_class=patient_class,
                                      eye=eye, visit=None, official_split=None))

    if rows and not scan.listed_in:
        hint = (f"none of the {len(rows)} rows names a file under {image_root}: give the folder that holds "
                f"{'/'.join(names)} (or its parent with data_information.csv)")
        scan.problems.insert(0, Problem("blocking", "wrong_root", str(csv_file), hint))
    _check_coverage(scan, csv_file, index, names, rows_per_class, classes_per_number, subset)
    return scan


def _resolve(scan: Scan, csv_file: Path, line: int, index: FileIndex, directory: str, canon: dict) -> Match | None:
    """The on-disk file a ``Directory`` value names (letter case ignored), or ``None`` after adding the problem."""
    rel, why = clean_relative(directory)
    if rel is None:
        scan.add("blocking", "bad_path", csv_file, f"Directory: {why}", line)
        return None
    match = index.find(rel)
    first = rel.split("/", 1)
    if (match is None and len(first) == 2 and first[0].upper() not in canon
            and first[0].lower() in (scan.root.name.lower(), NEH_FOLDER_NAME.lower())):
        match = index.find(first[1])  # Directory written from the dataset folder's parent
    if isinstance(match, list):
        scan.add("blocking", "ambiguous_path", csv_file,
                 f"Directory {directory!r} matches several files that differ only in case: {match}", line)
        return None
    if match is None:
        scan.add("blocking", "missing_file", csv_file, f"Directory {directory!r}: no such file under {scan.root}", line)
        return None
    escape = index.escapes(match.rel)
    if escape:
        scan.add("blocking", "bad_path", csv_file, f"Directory: {escape}", line)
        return None
    if match.case_mismatch:
        scan.add("warning", "case_mismatch", csv_file,
                 f"Directory {directory!r} matched {match.rel!r} on disk only ignoring letter case", line, match.rel)
    return match


def _consistent_with_path(scan: Scan, csv_file: Path, line: int, rel: str, patient_class: str, label: str,
                          number: str, eye: str | None) -> bool:
    """The folders and file name of ``rel`` must agree with the row (patient key and label come from both)."""
    parts = rel.split("/")
    if len(parts) < 3:
        scan.add("blocking", "bad_path", csv_file,
                 f"{rel!r} is not <CLASS>/<case>/[<eye>/]<file>: the patient cannot be checked", line, rel)
        return False
    ok = True
    if parts[0].upper() != patient_class.upper():
        scan.add("blocking", "label_conflict", csv_file,
                 f"{rel!r} is in class folder {parts[0]!r} but Class says {patient_class!r}", line, rel)
        ok = False
    if _patient_number(parts[1]) != number:
        scan.add("blocking", "patient_conflict", csv_file,
                 f"{rel!r} is in case folder {parts[1]!r} but Patient ID says {number!r}", line, rel)
        ok = False
    folder_eye = parts[2].upper() if len(parts) >= 4 else None
    if eye and folder_eye in EYES and folder_eye != eye:
        scan.add("warning", "eye_conflict", csv_file,
                 f"{rel!r} is in eye folder {parts[2]!r} but Eye says {eye!r} (the CSV is used)", line, rel)
    stem_label = _FILE_LABEL.match(Path(parts[-1]).stem)
    if stem_label and stem_label.group(1).upper() != label.upper():
        scan.add("blocking", "label_conflict", csv_file,
                 f"file name of {rel!r} says {stem_label.group(1)!r} but Label says {label!r}", line, rel)
        ok = False
    return ok


def _check_coverage(scan: Scan, csv_file: Path, index: FileIndex, names: list[str], rows_per_class: dict,
                    classes_per_number: dict, subset: str) -> None:
    for rel in sorted(index.exact - set(scan.listed_in)):
        scan.add("warning", "file_without_row", scan.root / rel, f"image is not listed in {csv_file.name}",
                 image_id=rel)
    for name in names:
        folder = _child(scan.root, name)
        if folder is not None and not any(r.lower().startswith(folder.name.lower() + "/") for r in index.folded):
            scan.add("blocking", "empty_class_folder", folder, "class folder holds no images")
        if rows_per_class.get(name, 0) == 0:
            scan.add("blocking", "empty_class", csv_file, f"no row of class {name!r}")
        elif subset == "worst_case" and not any(r.label == name for r in scan.records):
            scan.add("blocking", "empty_class", csv_file, f"no B-scan of class {name!r} is left by subset='worst_case'")
    shared = sorted((n for n, cls in classes_per_number.items() if len(cls) > 1), key=lambda n: (len(n), n))
    if shared:
        scan.add("info", "patient_number_collision", csv_file,
                 f"{len(shared)} case number(s) occur in several class folders (e.g. {', '.join(shared[:5])}); "
                 "they are different patients and the keys '<CLASS>/<case>' keep them apart")
        scan.notes.append(f"case numbers restart in every class folder: {len(shared)} number(s) are shared across "
                          "classes; patient keys are '<CLASS>/<case>'")
    if subset == "worst_case":
        scan.notes.append(f"subset='worst_case': kept {len(scan.records)} of {len(scan.listed_in)} "
                          "B-scans (label == patient class)")


def load_neh(root: str | Path, subset: Subset = "worst_case", classes: Sequence[str] | None = None,
             csv_path: str | Path | None = None) -> OCTDataset:
    """Load an NEH tree (see the module docstring); raise :class:`~kdcore.errors.DataError` on blocking problems.

    Example:
        >>> ds = load_neh("NEH_UT_2021RetinalOCTDataset", subset="all")  # doctest: +SKIP
        >>> ds.records[0].patient                                       # doctest: +SKIP
        'NORMAL/1'
    """
    return scan_neh(root, subset, classes, csv_path).to_dataset()
