"""One entry point for every OCT dataset format: :func:`load_oct_dataset` (and :func:`scan_oct_dataset`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

from kdcore.errors import ConfigError, DataError

from ._scan import Scan
from .manifest import scan_manifest
from .neh import scan_neh
from .oct2017 import scan_oct2017
from .records import OCTDataset
from .volume_scan import VolumeOptions, load_volumes, scan_volumes

__all__ = ["FORMATS", "load_oct_dataset", "scan_oct_dataset"]

FORMATS = ("neh", "oct2017", "manifest", "volumes")
Format = Literal["neh", "oct2017", "manifest", "volumes"]


def scan_oct_dataset(root: str | Path, format: Format, subset: str | None = None,
                     classes: Sequence[str] | None = None, volumes: VolumeOptions | None = None) -> Scan:
    """Index a dataset and collect every problem without raising (what the audit builds on)."""
    if format not in FORMATS:
        raise ConfigError(f"format: expected one of {', '.join(FORMATS)}, got {format!r}")
    if format != "neh" and subset not in (None, "all"):
        raise ConfigError(f"subset: {subset!r} applies to the NEH format only (use 'all' or leave it unset)")
    if not Path(root).exists():
        raise DataError(f"{root}: data root does not exist")
    if format == "neh":
        return scan_neh(root, subset or "worst_case", classes)
    if format == "oct2017":
        return scan_oct2017(root, classes)
    if format == "volumes":
        return scan_volumes(root, classes, volumes)
    return scan_manifest(root, classes)


def load_oct_dataset(root: str | Path, format: Format, subset: str | None = None,
                     classes: Sequence[str] | None = None, volumes: VolumeOptions | None = None) -> OCTDataset:
    """Load an OCT dataset; raise :class:`~kdcore.errors.DataError` naming file:line for blocking problems.

    Args:
        root: the data root (NEH: folder with ``data_information.csv``; OCT2017: folder with ``train``/``test``
            or class folders; manifest: the CSV or a folder with ``manifest.csv``).
        format: ``"neh"``, ``"oct2017"``, ``"manifest"`` or ``"volumes"`` (DICOM OPT / vendor volume files).
        subset: NEH only: ``"worst_case"`` (default, KD-OCT's protocol) or ``"all"``.
        classes: class names in index order; default per format (NEH: NORMAL, DRUSEN, CNV; otherwise the
            sorted classes found). A label outside ``classes`` is an error.
        volumes: ``"volumes"`` only: B-scan selection, labels CSV and patient key
            (:class:`~medkd.data.volume_scan.VolumeOptions`).

    Example:
        >>> ds = load_oct_dataset("data/neh", "neh", subset="all")  # doctest: +SKIP
        >>> ds.classes                                              # doctest: +SKIP
        ['NORMAL', 'DRUSEN', 'CNV']
    """
    if format == "volumes":
        if not Path(root).exists():
            raise DataError(f"{root}: data root does not exist")
        return load_volumes(root, classes, volumes)
    return scan_oct_dataset(root, format, subset, classes).to_dataset()
