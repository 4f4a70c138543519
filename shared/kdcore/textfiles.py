"""Where a text file stops being UTF-8: the line a user must fix, not the line a buffered reader had reached.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.csv"
    >>> _ = p.write_bytes(b"path,label\\nok.jpg,CNV\\ncaf\\xe9.jpg,CNV\\n")
    >>> utf8_error(p)
    (3, 'byte 0xe9 is not UTF-8 (a Latin-1 or Windows file? save it as UTF-8)')
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["utf8_error"]


def utf8_error(path: str | os.PathLike) -> tuple[int, str] | None:
    """``(1-based line, reason)`` of the first byte that is not UTF-8, or None when the file decodes."""
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = data[exc.start:exc.start + 1]
        return (data[:exc.start].count(b"\n") + 1,
                f"byte 0x{byte.hex()} is not UTF-8 (a Latin-1 or Windows file? save it as UTF-8)")
    return None
