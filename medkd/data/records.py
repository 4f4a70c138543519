"""What every OCT loader returns: one :class:`OCTRecord` per B-scan inside an :class:`OCTDataset`.

Loaders only index files (no decoding); :class:`Problem` is how they and the audit describe what is wrong.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, Literal

from kdcore.errors import DataError

__all__ = ["OCTRecord", "OCTDataset", "Problem", "Severity", "IMAGE_SUFFIXES", "raise_blocking"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})

Severity = Literal["blocking", "warning", "info"]


@dataclass(frozen=True)
class OCTRecord:
    """One B-scan.

    ``image_id`` is the path relative to :attr:`OCTDataset.root` as found on disk (unique in a dataset;
    ``"<path>#<frame>"`` for a B-scan of a volume file, whose 0-based index is ``frame``);
    ``patient`` is the globally unique patient key that every split must group by (``"CNV/12"`` for NEH,
    the file-name patient number for OCT2017); ``label`` is the image-level class.
    """

    image_id: str
    path: Path
    label: str
    patient: str
    patient_class: str | None = None
    eye: str | None = None
    visit: str | None = None
    official_split: str | None = None
    frame: int | None = None  # 0-based B-scan of a volume file (data.format volumes); None for image files
    # Set by medkd.privacy.pseudonymise: the raw keys, kept in memory only (the split is made on them).
    raw_patient: str | None = field(default=None, repr=False, compare=False)
    raw_id: str | None = field(default=None, repr=False, compare=False)


@dataclass
class OCTDataset:
    """The records of one dataset, the ordered class names (index = class id) and what the loader noticed."""

    records: list[OCTRecord]
    classes: list[str]
    format: str
    root: Path
    notes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # format-specific facts recorded in dataset.json (B-scan selection)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[OCTRecord]:
        return iter(self.records)

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.records]

    @property
    def targets(self) -> list[int]:
        """Class index of every record, in :attr:`classes` order."""
        index = {c: i for i, c in enumerate(self.classes)}
        return [index[r.label] for r in self.records]

    @property
    def patients(self) -> list[str]:
        return [r.patient for r in self.records]

    def class_counts(self) -> dict[str, int]:
        counts = Counter(r.label for r in self.records)
        return {c: counts.get(c, 0) for c in self.classes}

    def without(self, image_ids: Iterable[str], reason: str = "excluded") -> "OCTDataset":
        """A copy without the given images (e.g. the unreadable ones returned by ``integrity_gate``)."""
        drop = set(image_ids)
        unknown = drop - {r.image_id for r in self.records}
        if unknown:
            raise DataError(f"{self.root}: cannot exclude images that are not in the dataset: {sorted(unknown)[:5]}")
        kept = [r for r in self.records if r.image_id not in drop]
        notes = list(self.notes)
        if drop:
            listed = ", ".join(sorted(drop)[:5]) + (" ..." if len(drop) > 5 else "")
            notes.append(f"{len(drop)} image(s) {reason}: {listed}")
        return replace(self, records=kept, notes=notes)


@dataclass(frozen=True)
class Problem:
    """One finding of a loader scan or the audit; ``path`` is the file concerned (a CSV for row problems)."""

    severity: Severity
    kind: str
    path: str
    detail: str
    line: int | None = None
    image_id: str | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.detail} [{self.kind}]"

    def to_dict(self) -> dict:
        return {"severity": self.severity, "kind": self.kind, "path": self.path, "line": self.line,
                "image_id": self.image_id, "detail": self.detail}


def raise_blocking(problems: Iterable[Problem], what: str, limit: int = 20) -> None:
    """Raise one :class:`DataError` listing the first ``limit`` blocking problems and how many there are."""
    blocking = [p for p in problems if p.severity == "blocking"]
    if not blocking:
        return
    lines = [f"  {p}" for p in blocking[:limit]]
    if len(blocking) > limit:
        lines.append(f"  ... and {len(blocking) - limit} more")
    raise DataError(f"{what}: {len(blocking)} blocking problem(s):\n" + "\n".join(lines))
