"""Strict image reading: a bad file is an error that names it, never a black or grey replacement.

OpenCV decodes a truncated JPEG into an image padded with grey and only prints a warning, so the
end-of-image markers are checked on the bytes before decoding.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from .errors import DataError

__all__ = ["read_image", "check_image_bytes", "ImageReadError", "exif_orientation", "apply_exif_orientation"]

cv2.setNumThreads(1)  # DataLoader workers already parallelise; nested OpenCV threads oversubscribe 2 cores.


class ImageReadError(DataError):
    """An image file that cannot be used; ``path`` and ``reason`` are kept for reports."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _format(buffer: np.ndarray) -> str:
    head = buffer[:8].tobytes()
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head.startswith(b"BM"):
        return "bmp"
    return "unknown"


def check_image_bytes(path: str | os.PathLike, buffer: np.ndarray) -> str:
    """Raise :class:`ImageReadError` for empty or truncated files; return the detected format
    (``"unknown"`` for formats without an end marker check, which the decoder then decides on)."""
    if buffer.size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    kind = _format(buffer)
    tail = buffer[-4096:].tobytes().rstrip(b"\x00\r\n ")
    if kind == "jpeg" and not tail.endswith(b"\xff\xd9"):
        raise ImageReadError(path, f"truncated JPEG (no end-of-image marker; {buffer.size} bytes)")
    if kind == "png" and not tail.endswith(b"IEND\xaeB`\x82"):
        raise ImageReadError(path, f"truncated PNG (no IEND chunk; {buffer.size} bytes)")
    return kind  # other formats (PPM/PGM, WebP, ...) are accepted when a decoder reads them: see read_image


def exif_orientation(data: np.ndarray | bytes) -> int:
    """The EXIF Orientation tag (1..8) of an encoded image, 1 when there is none or it cannot be read.

    ``IMREAD_UNCHANGED`` ignores it, so a phone photograph would otherwise be read lying on its side.
    """
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(bytes(data))) as image:
            value = int(image.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - no readable EXIF is the common case, not an error
        return 1
    return value if 1 <= value <= 8 else 1


def _may_have_exif(kind: str, buffer: np.ndarray) -> bool:
    """A cheap look for an EXIF block, so B-scans without one pay nothing for the check."""
    if kind == "bmp":
        return False
    if kind == "jpeg":
        return b"Exif\x00\x00" in buffer[:65536].tobytes()
    if kind == "png":
        return b"eXIf" in buffer.tobytes()
    return True


def apply_exif_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels as they are meant to be displayed (what PIL's ``ImageOps.exif_transpose`` does)."""
    if orientation in (2, 4, 5, 7):
        image = image[:, ::-1] if orientation == 2 else image[::-1] if orientation == 4 else image
    if orientation == 3:
        image = image[::-1, ::-1]
    elif orientation == 5:
        image = np.swapaxes(image, 0, 1)
    elif orientation == 6:
        image = np.swapaxes(image, 0, 1)[:, ::-1]
    elif orientation == 7:
        image = np.swapaxes(image, 0, 1)[::-1, ::-1]
    elif orientation == 8:
        image = np.swapaxes(image, 0, 1)[::-1]
    return np.ascontiguousarray(image)


def read_image(path: str | os.PathLike, mode: Literal["gray", "rgb"] = "rgb", allow_alpha: bool = False) -> np.ndarray:
    """Read an 8-bit image as ``(H, W)`` uint8 for ``"gray"`` or ``(H, W, 3)`` RGB uint8 for ``"rgb"``.

    Greyscale stored as RGB (equal channels) is accepted for ``"gray"``; colour is converted.
    ``allow_alpha`` drops a fourth (alpha) channel instead of refusing it.

    Example:
        >>> import tempfile, cv2, numpy as np
        >>> f = tempfile.mktemp(suffix=".png"); _ = cv2.imwrite(f, np.zeros((8, 10), np.uint8))
        >>> read_image(f, "gray").shape
        (8, 10)
    """
    path = Path(path)
    try:
        buffer = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory, not an image") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read ({exc.strerror or exc})") from None
    kind = check_image_bytes(path, buffer)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageReadError(path, "cannot decode image data (corrupt file)" if kind != "unknown" else
                             "not an image format the decoders read (JPEG, PNG, TIFF, BMP, PPM/PGM, WebP, ...)")
    if _may_have_exif(kind, buffer):
        image = apply_exif_orientation(image, exif_orientation(buffer))
    if image.dtype != np.uint8:
        raise ImageReadError(path, f"unsupported bit depth {image.dtype} (expected 8-bit)")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 4 and kind == "png" and buffer.size > 25 and buffer[25] == 4:
        # OpenCV expands a grey+alpha PNG to BGRA; report what the file holds.
        if not allow_alpha:
            raise ImageReadError(path, "2 channels (grey + alpha; expected 1 greyscale or 3 colour)")
    if channels == 4 and allow_alpha:
        image, channels = image[:, :, :3], 3
    if channels not in (1, 3):
        raise ImageReadError(path, f"{channels} channels (expected 1 greyscale or 3 colour"
                                   f"{' or 4 with alpha' if allow_alpha else ''})")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ImageReadError(path, f"image too small ({image.shape[1]}x{image.shape[0]} pixels)")
    if mode == "gray":
        return image if channels == 1 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
