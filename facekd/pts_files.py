"""iBUG ``.pts`` landmark files: 1-based on disk, 0-based in memory.

Example:
    >>> import tempfile, numpy as np
    >>> f = tempfile.mktemp(suffix=".pts")
    >>> write_pts(f, np.array([[0.0, 1.5], [10.0, 20.0]]))
    >>> read_pts(f)
    array([[ 0. ,  1.5],
           [10. , 20. ]])
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from kdcore.atomic import atomic_write_text
from kdcore.errors import DataError

__all__ = ["read_pts", "write_pts", "PtsFormatError"]


class PtsFormatError(DataError):
    """A malformed .pts file; the message names the file and line."""


def read_pts(path: str | os.PathLike, n_points: int | None = None) -> np.ndarray:
    """Read a .pts file into a float64 array (K, 2) of 0-based x, y.

    Args:
        path: the .pts file (``version: 1``, ``n_points: K``, ``{``, K lines ``x y``, ``}``).
        n_points: when given, a file with another point count is an error.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise PtsFormatError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PtsFormatError(f"{path}: cannot read ({exc})") from None
    numbered = [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]
    if not numbered:
        raise PtsFormatError(f"{path}: empty file")
    header: dict[str, str] = {}
    position = 0
    while position < len(numbered) and numbered[position][1] != "{":
        lineno, text = numbered[position]
        key, sep, value = text.partition(":")
        if not sep:
            raise PtsFormatError(f"{path}:{lineno}: expected 'key: value' header or '{{', got {text!r}")
        header[key.strip().lower()] = value.strip()
        position += 1
    if position == len(numbered):
        raise PtsFormatError(f"{path}: no '{{' opening the point list")
    if "n_points" not in header:
        raise PtsFormatError(f"{path}: header has no n_points")
    try:
        declared = int(header["n_points"])
    except ValueError:
        raise PtsFormatError(f"{path}: n_points is not an integer: {header['n_points']!r}") from None
    body = numbered[position + 1:]
    if not body or body[-1][1] != "}":
        raise PtsFormatError(f"{path}: no closing '}}' after the points")
    body = body[:-1]
    points = []
    for lineno, text in body:
        fields = text.split()
        if len(fields) != 2:
            raise PtsFormatError(f"{path}:{lineno}: expected 'x y', got {text!r}")
        try:
            x, y = float(fields[0]), float(fields[1])
        except ValueError:
            raise PtsFormatError(f"{path}:{lineno}: not a number in {text!r}") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise PtsFormatError(f"{path}:{lineno}: non-finite coordinate in {text!r}")
        points.append((x, y))
    if len(points) != declared:
        raise PtsFormatError(f"{path}: n_points says {declared} but the file lists {len(points)} points")
    if n_points is not None and declared != n_points:
        raise PtsFormatError(f"{path}: {declared} points, expected {n_points}")
    return np.asarray(points, dtype=np.float64).reshape(-1, 2) - 1.0


def write_pts(path: str | os.PathLike, points: np.ndarray) -> None:
    """Write (K, 2) 0-based points as a 1-based .pts file (atomically)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (K, 2), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"{path}: refusing to write non-finite landmark coordinates")
    lines = ["version: 1", f"n_points: {len(points)}", "{"]
    lines += [f"{x + 1:.3f} {y + 1:.3f}" for x, y in points]
    lines.append("}")
    atomic_write_text(path, "\n".join(lines) + "\n")
