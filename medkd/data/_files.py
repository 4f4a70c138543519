"""File-system helpers shared by the CSV-based loaders: a case-insensitive file index and a line-aware CSV reader."""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kdcore.errors import DataError
from kdcore.textfiles import utf8_error

from .records import IMAGE_SUFFIXES

__all__ = ["FileIndex", "Match", "read_csv_rows", "clean_relative"]


@dataclass(frozen=True)
class Match:
    """Where a listed relative path was found; ``case_mismatch`` when only a case-insensitive match exists."""

    rel: str
    case_mismatch: bool


class FileIndex:
    """Every image file under ``root`` by exact relative POSIX path and by its lower-cased form.

    Lookups behave the same on case-sensitive (Linux) and case-insensitive (macOS, Windows) file systems:
    the ``rel`` returned is always the spelling found on disk.
    """

    def __init__(self, root: Path, suffixes: frozenset[str] = IMAGE_SUFFIXES):
        self.root = root
        self.exact: set[str] = set()
        self.folded: dict[str, list[str]] = defaultdict(list)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            base = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
            for name in sorted(filenames):
                if name.startswith(".") or Path(name).suffix.lower() not in suffixes:
                    continue
                rel = (base / name).as_posix() if str(base) != "." else name
                self.exact.add(rel)
                self.folded[rel.lower()].append(rel)

    def escapes(self, rel: str) -> str | None:
        """Why ``rel`` (found on disk) is not inside the data root: a symbolic link (or a linked folder on
        the way) that leads outside it; None when it stays inside."""
        target = (self.root / rel).resolve()
        root = self.root.resolve()
        if target == root or root in target.parents:
            return None
        return f"{rel!r} is a symbolic link leading outside the data root (to {target})"

    def find(self, rel: str) -> Match | list[str] | None:
        """The file for ``rel``: a :class:`Match`, a list of candidates when ambiguous, or ``None``."""
        if rel in self.exact:
            return Match(rel, False)
        candidates = self.folded.get(rel.lower(), [])
        if len(candidates) == 1:
            return Match(candidates[0], True)
        return candidates or None


def clean_relative(raw: str) -> tuple[str | None, str | None]:
    """Normalise a listed path to relative POSIX form; return ``(path, None)`` or ``(None, why refused)``.

    Backslashes are read as separators (CSV files written on Windows); ``./`` prefixes are dropped.
    Absolute paths, drive letters and ``..`` components are refused: a dataset must stay inside its root.
    """
    text = raw.strip().replace("\\", "/")
    if not text:
        return None, "empty path"
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        return None, f"absolute path {raw!r} (paths must be relative to the data root)"
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, f"{raw!r} escapes the data root ('..')"
    if not parts:
        return None, f"{raw!r} names no file"
    return "/".join(parts), None


def read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header (stripped) and ``(line number, row)`` pairs; blank lines are skipped.

    Raises :class:`DataError` for an unreadable or header-less file and for rows with more fields than
    the header (a stray comma would otherwise shift every value silently).
    """
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"{path}: cannot open CSV ({exc.strerror or exc})") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}:1: empty CSV (no header line)")
            header = [h.strip() for h in header]
            rows: list[tuple[int, dict[str, str]]] = []
            for values in reader:
                if not any(v.strip() for v in values):
                    continue
                if len(values) > len(header):
                    raise DataError(f"{path}:{reader.line_num}: {len(values)} fields but the header has {len(header)}")
                padded = values + [""] * (len(header) - len(values))
                rows.append((reader.line_num, {h: v.strip() for h, v in zip(header, padded)}))
        except UnicodeDecodeError:
            # The reader decodes ahead in blocks: its line count says where it was, not where the bad byte is.
            line, reason = utf8_error(path) or (max(1, reader.line_num), "not UTF-8")
            raise DataError(f"{path}:{line}: {reason}") from None
        except csv.Error as exc:
            raise DataError(f"{path}:{max(1, reader.line_num)}: malformed CSV ({exc})") from None
    return header, rows
