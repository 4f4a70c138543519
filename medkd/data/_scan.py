"""The common result of a format scan: records plus every problem found (the loader raises, the audit reports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from kdcore.errors import ConfigError

from .records import OCTDataset, OCTRecord, Problem, Severity, raise_blocking

__all__ = ["Scan", "resolve_classes"]


@dataclass
class Scan:
    """What a format scanner found; ``root`` is the folder that ``image_id`` paths are relative to."""

    format: str
    root: Path
    classes: list[str]
    records: list[OCTRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # patients found in both the official train (and val) and test folders (OCT2017, manifest split column)
    overlap: set[str] = field(default_factory=set)
    # files listed by the CSV (``image_id`` -> CSV location) for the audit's "file without row" reasoning
    listed_in: dict[str, str] = field(default_factory=dict)

    def add(self, severity: Severity, kind: str, path: Path | str, detail: str, line: int | None = None,
            image_id: str | None = None) -> None:
        self.problems.append(Problem(severity, kind, str(path), detail, line, image_id))

    @property
    def blocking(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "blocking"]

    def to_dataset(self) -> OCTDataset:
        """The dataset, or :class:`~kdcore.errors.DataError` listing every blocking problem."""
        raise_blocking(self.problems, f"{self.format} dataset at {self.root}")
        notes = list(self.notes) + [str(p) for p in self.problems if p.severity == "warning"]
        return OCTDataset(records=list(self.records), classes=list(self.classes), format=self.format,
                          root=self.root, notes=notes)


def resolve_classes(classes: Sequence[str] | None, found: Sequence[str]) -> list[str]:
    """``classes`` as given (validated) or, when ``None``, the classes ``found`` in the data."""
    if classes is None:
        return list(found)
    if isinstance(classes, str):
        raise ConfigError(f"classes: expected a list of class names, got the string {classes!r}")
    names = [str(c).strip() for c in classes]
    if not names or any(not n for n in names):
        raise ConfigError(f"classes: expected non-empty class names, got {list(classes)!r}")
    folded = [n.upper() for n in names]
    if len(set(folded)) != len(folded):
        raise ConfigError(f"classes: duplicated class names (case-insensitive) in {names!r}")
    return names
