"""``medkd predict`` on OCT volumes: a probability row per B-scan, one aggregated row per volume, DICOM SRs.

Rows are identified by the file, its SOP instance UID (DICOM) and the 1-based frame number; patient and study
identifiers never enter the CSV or the log (the SRs carry them, copied from the source files).

Aggregation over the volume's classified B-scans, per class, then renormalised to sum 1:
``max`` (the largest B-scan probability), ``mean``, ``topk-mean`` (mean of the ``k`` largest). The default is
the one the training recipe recorded in the export (``model.json`` ``volume``), else ``mean``; so is the B-scan
selection (``data.bscans``, else ``all``).

Example:
    >>> probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    >>> aggregate_probabilities(probs, "max").round(3).tolist()  # (0.9, 0.8) / 1.7
    [0.529, 0.471]
    >>> aggregate_probabilities(probs, "topk-mean", k=2).round(3).tolist()  # (0.65, 0.7) / 1.35
    [0.481, 0.519]
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from kdcore.atomic import atomic_open
from kdcore.errors import DataError, KDError

from .data.volumes import VolumeInfo, VolumeReadError, parse_selection, read_frames, read_volume_info, \
    select_frames, volume_kind

__all__ = ["AGGREGATES", "aggregate_probabilities", "expand_volume_inputs", "is_volume_input", "predict_volumes",
           "VolumePredictions"]

AGGREGATES = ("max", "mean", "topk-mean")


def aggregate_probabilities(probs: np.ndarray, how: str, k: int = 3) -> np.ndarray:
    """(F, C) B-scan probabilities -> (C,) volume probabilities (see the module docstring)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) == 0:
        raise ValueError(f"expected (frames, classes) probabilities, got shape {probs.shape}")
    if how == "mean":
        values = probs.mean(axis=0)
    elif how == "max":
        values = probs.max(axis=0)
    elif how == "topk-mean":
        top = max(1, min(int(k), len(probs)))
        values = np.sort(probs, axis=0)[-top:].mean(axis=0)
    else:
        raise KDError(f"--aggregate: expected one of {', '.join(AGGREGATES)}, got {how!r}")
    return values / values.sum()


def is_volume_input(path: str | os.PathLike) -> bool:
    """A volume file (DICOM, vendor export) or a folder (searched for volume files)."""
    path = Path(path)
    return path.is_dir() or volume_kind(path) is not None


def expand_volume_inputs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders replaced by the volume files under them (sorted); TIFFs beside an XML are skipped."""
    out: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            out.append(path)
            continue
        found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                       and volume_kind(p) is not None)
        if not found:
            raise DataError(f"{path}: no volume files (DICOM OPT, .vol, HEYEX .xml, .e2e, .fds, .fda, .img) "
                            "in this folder")
        out.extend(found)
    return out


@dataclass
class VolumePredictions:
    rows: list[dict[str, Any]]
    volumes: list[tuple[VolumeInfo, list[int], np.ndarray, np.ndarray]]  # info, frames, (F, C), (C,)
    aggregate: str
    sr_files: list[Path]
    overlays: list[Path]


def predict_volumes(classifier: Any, inputs: Sequence[str | os.PathLike], out_csv: str | os.PathLike,
                    aggregate: str | None = None, topk: int | None = None, bscans: Any = None, tta: bool = False,
                    dicom_sr: str | os.PathLike | None = None, saliency: str | os.PathLike | None = None,
                    export: str | os.PathLike | None = None, model_file: str | os.PathLike | None = None,
                    batch_size: int = 16) -> VolumePredictions:
    """Classify every selected B-scan of every volume, aggregate per volume, write the CSV (and SRs, overlays).

    Everything is read and classified before anything is written: an unreadable volume stops the command
    naming the file, and leaves no CSV, SR or overlay behind.
    """
    if Path(out_csv).is_dir():
        raise KDError(f"{out_csv}: is a folder; --out takes the CSV file to write")
    recorded = classifier.contract.get("volume") or {}
    how = aggregate or recorded.get("aggregate") or "mean"
    k = int(topk or recorded.get("topk") or 3)
    if how not in AGGREGATES:
        raise KDError(f"--aggregate: expected one of {', '.join(AGGREGATES)}, got {how!r}")
    selection = parse_selection(bscans if bscans is not None else recorded.get("bscans", "all"))
    files = expand_volume_inputs(inputs)
    if not files:
        raise KDError("no volumes to classify")
    volumes = []
    for path in files:
        try:
            info = read_volume_info(path)
            frames = select_frames(info.n_frames, selection)
            stack = read_frames(path)
        except VolumeReadError as exc:
            raise DataError(f"{exc.path}: {exc.reason}") from None
        probs = classifier.predict_proba([stack[f] for f in frames], tta=tta, batch_size=batch_size)
        volumes.append((info, frames, probs, aggregate_probabilities(probs, how, k)))
    label = how if how != "topk-mean" else f"topk-mean:{k}"
    names = classifier.classes
    rows = []
    for info, frames, probs, volume_probs in volumes:
        base = {"file": info.path, "sop_instance_uid": info.sop_instance_uid or "", "eye": info.laterality or ""}
        for frame, row in zip(frames, probs):
            rows.append({**base, "level": "bscan", "frame": frame + 1, "n_bscans": 1, "aggregate": "",
                         "class": names[int(row.argmax())], **{f"prob_{c}": float(p) for c, p in zip(names, row)}})
        rows.append({**base, "level": "volume", "frame": "", "n_bscans": len(frames), "aggregate": label,
                     "class": names[int(volume_probs.argmax())],
                     **{f"prob_{c}": float(p) for c, p in zip(names, volume_probs)}})
    sr_files: list[Path] = []
    dicom = [(info, frames, v) for info, frames, _, v in volumes if info.kind == "dicom"]
    if dicom_sr is not None:
        if not dicom:
            raise KDError("--dicom-sr: none of the inputs is a DICOM file; an SR must reference DICOM instances")
        from .dicom_sr import VolumeResult, model_identity, write_series_sr

        identity = model_identity(classifier.contract, model_file or export)
        results = [VolumeResult(info.path, frames, v, label) for info, frames, v in dicom]
    overlays: list[Path] = []
    if saliency is not None:
        from .saliency import load_torch_model

        if export is None:
            raise KDError("--saliency needs the export folder")
        torch_model, contract = load_torch_model(export)
    columns = ["file", "sop_instance_uid", "frame", "eye", "level", "n_bscans", "aggregate", "class"] + \
        [f"prob_{c}" for c in names]
    with atomic_open(out_csv, "w") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for record in rows:
            writer.writerow({k_: (f"{v:.6f}" if isinstance(v, float) else v) for k_, v in record.items()})
    if dicom_sr is not None:
        sr_files = write_series_sr(results, identity, dicom_sr)
    if saliency is not None:
        from .saliency import write_overlays

        items, wanted, used = [], [], set()
        for info, frames, probs, _ in volumes:
            stack = read_frames(info.path)
            stem = _unique(Path(info.path).stem, used)
            for frame, row in zip(frames, probs):
                items.append((f"{stem}_f{frame + 1:03d}", stack[frame]))
                wanted.append(int(row.argmax()))
        overlays = write_overlays(torch_model, contract, items, saliency, classes=wanted)
    return VolumePredictions(rows, volumes, label, sr_files, overlays)


def _unique(stem: str, used: set[str]) -> str:
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}_{n}"
    used.add(name)
    return name
