"""Out-of-fold prediction tables (``predictions.csv``): every report is recomputed from these files."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from .atomic import atomic_open
from .errors import DataError

__all__ = ["write_predictions", "read_predictions"]


def write_predictions(path: str | os.PathLike, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
    """Write rows (dicts) with exactly ``columns``; floats keep full precision."""
    with atomic_open(path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="raise", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})


def read_predictions(path: str | os.PathLike, required: Sequence[str] = ()) -> list[dict[str, str]]:
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: missing columns {missing}")
            return list(reader)
    except FileNotFoundError:
        raise DataError(f"{path}: predictions file not found") from None
