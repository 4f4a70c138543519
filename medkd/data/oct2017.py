"""Kermany et al. 2018 "OCT2017" (UCSD; CNV / DME / DRUSEN / NORMAL), loaded from its folders and file names.

Layouts accepted under ``root``:

* official: ``{train,test}/<CLASS>/<CLASS>-<patient>-<n>.jpeg`` (a Kaggle-style ``val`` folder is read too and
  counts as training data for :func:`official_split`);
* single split: ``<CLASS>/<CLASS>-<patient>-<n>.jpeg`` (e.g. one split folder, or the 32-image sample kept in
  ``shared/fixtures/oct2017-real``); records then have ``official_split=None``.

The patient key is the file-name patient number alone: Kermany's ids are per person, so ``CNV-123-1`` and
``DRUSEN-123-1`` are the same patient. The official train and test folders share patients; see
:func:`train_test_overlap` and :func:`official_split`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from kdcore.errors import DataError

from ._scan import Scan, resolve_classes
from .records import IMAGE_SUFFIXES, OCTDataset, OCTRecord

__all__ = ["OCT2017_CLASSES", "SPLIT_FOLDERS", "FILE_NAME", "load_oct2017", "scan_oct2017", "train_test_overlap",
           "official_split"]

OCT2017_CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")
SPLIT_FOLDERS = ("train", "test", "val")
FILE_NAME = re.compile(r"^(?P<cls>[A-Za-z]+)-(?P<patient>\d+)-(?P<n>\d+)\.(?:jpe?g|png|tiff?|bmp)$", re.IGNORECASE)
_SKIPPED_FOLDERS = ("__macosx",)  # left by zip tools


def _folders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_oct2017(root: str | Path, classes: Sequence[str] | None = None) -> Scan:
    """Index an OCT2017 tree without raising: every problem is collected in ``Scan.problems``."""
    root = Path(root).absolute()
    if not root.is_dir():
        scan = Scan("oct2017", root, list(classes or OCT2017_CLASSES))
        scan.add("blocking", "missing_root", root, "data root is not a folder")
        return scan
    children = [p for p in _folders(root) if p.name.lower() not in _SKIPPED_FOLDERS]
    splits = [p for p in children if p.name.lower() in SPLIT_FOLDERS]
    groups = [(p.name.lower(), p) for p in splits] if splits else [(None, root)]
    class_dirs = [(split, d) for split, base in groups for d in _folders(base)
                  if d.name.lower() not in _SKIPPED_FOLDERS]
    found = sorted({d.name.upper() for _, d in class_dirs})
    names = resolve_classes(classes, found)
    canon = {c.upper(): c for c in names}
    scan = Scan("oct2017", root, names)
    if splits:
        for other in (p for p in children if p not in splits):
            scan.add("warning", "unexpected_folder", other, "not a split folder (train/test/val); ignored")
        scan.notes.append(f"official split folders: {', '.join(p.name for p in splits)}")
    else:
        scan.notes.append("no train/test folders: class folders read as one split (official_split=None)")
    if not class_dirs:
        scan.add("blocking", "empty_class", root, "no class folders found")
    for split, folder in class_dirs:
        label = canon.get(folder.name.upper())
        if label is None:
            scan.add("blocking", "unknown_class", folder, f"class folder {folder.name!r} is not one of {names}")
            continue
        _scan_class_folder(scan, root, folder, label, split)
    for name in names:
        present = {split for split, d in class_dirs if d.name.upper() == name.upper()}
        if not present:
            scan.add("blocking", "empty_class", root, f"no folder for class {name!r}")
        for split, base in groups:
            if present and split not in present:
                scan.add("warning", "missing_class_folder", base, f"no folder for class {name!r} in this split")
    if splits:
        train = {r.patient for r in scan.records if r.official_split in ("train", "val")}
        test = {r.patient for r in scan.records if r.official_split == "test"}
        scan.overlap = train & test
        if scan.overlap:
            scan.notes.append(f"{len(scan.overlap)} patient(s) appear in both the official train and test folders "
                              f"(e.g. {', '.join(sorted(scan.overlap)[:5])}); official_split(drop_overlap=True) "
                              "removes them from training")
    return scan


def _scan_class_folder(scan: Scan, root: Path, folder: Path, label: str, split: str | None) -> None:
    n_images = 0
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            path = Path(entry.path)
            rel = path.relative_to(root).as_posix()
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                scan.add("warning", "unexpected_folder", path, "sub-folder inside a class folder; ignored")
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                scan.add("warning", "not_an_image", path, "not an image file name; ignored")
                continue
            n_images += 1
            match = FILE_NAME.match(entry.name)
            if match is None:
                scan.add("blocking", "bad_file_name", path,
                         "file name is not <CLASS>-<patient>-<n>.jpeg: the patient cannot be read", image_id=rel)
                continue
            if match.group("cls").upper() != label.upper():
                scan.add("blocking", "label_conflict", path,
                         f"file name says {match.group('cls')!r} but it is in class folder {folder.name!r}",
                         image_id=rel)
                continue
            scan.records.append(OCTRecord(image_id=rel, path=path, label=label, patient=match.group("patient"),
                                          patient_class=None, eye=None, visit=None, official_split=split))
    if n_images == 0:
        scan.add("blocking", "empty_class_folder", folder, "class folder holds no images")


def load_oct2017(root: str | Path, classes: Sequence[str] | None = None) -> OCTDataset:
    """Load an OCT2017 tree (see the module docstring); raise :class:`~kdcore.errors.DataError` on blocking problems.

    Example:
        >>> ds = load_oct2017("OCT2017")               # doctest: +SKIP
        >>> sorted(train_test_overlap(ds))[:1]         # doctest: +SKIP
        ['1001666']
    """
    return scan_oct2017(root, classes).to_dataset()


def _check_official(dataset: OCTDataset) -> None:
    missing = [r.image_id for r in dataset.records if r.official_split is None]
    if missing:
        raise DataError(f"{dataset.root}: {len(missing)} image(s) have no official split (e.g. {missing[0]}); "
                        "the official train/test protocol needs train/ and test/ folders")


def train_test_overlap(dataset: OCTDataset) -> set[str]:
    """Patient keys with images in both the official test folder and the training folders (train, val)."""
    _check_official(dataset)
    train = {r.patient for r in dataset.records if r.official_split in ("train", "val")}
    return train & {r.patient for r in dataset.records if r.official_split == "test"}


def official_split(dataset: OCTDataset, drop_overlap: bool = True
                   ) -> tuple[list[OCTRecord], list[OCTRecord], set[str]]:
    """``(train_records, test_records, dropped_patients)`` for the official protocol.

    The test folder is kept whole; with ``drop_overlap`` the training images of patients that also appear
    in the test folder are removed (they would leak), and their keys are returned as ``dropped_patients``.
    ``val`` images (Kaggle layout) count as training data.
    """
    overlap = train_test_overlap(dataset)
    test = [r for r in dataset.records if r.official_split == "test"]
    train = [r for r in dataset.records if r.official_split in ("train", "val")]
    if not test or not train:
        raise DataError(f"{dataset.root}: the official protocol needs images in both the train and test folders "
                        f"(found {len(train)} train, {len(test)} test)")
    dropped = overlap if drop_overlap else set()
    return [r for r in train if r.patient not in dropped], test, set(dropped)
