"""OCT volumes from the clinic: DICOM Ophthalmic Tomography and vendor exports, read by the libraries.

One file is one volume (a stack of B-scans). Which library reads which format:

========================  ===========================  ==================================================
format                    suffix                       reader
========================  ===========================  ==================================================
DICOM OPT (multi-frame)   ``.dcm``, ``.dicom``, none   pydicom (compressed syntaxes via pylibjpeg / gdcm)
Heidelberg HEYEX raw      ``.vol``                     eyepy (``HeVolReader``)
Heidelberg HEYEX XML      ``.xml`` + its ``.tif``       eyepy (``HeXmlReader``)
Heidelberg E2E            ``.e2e``                     oct-converter (``E2E``), one volume per file
Topcon                    ``.fds``, ``.fda``           oct-converter (``FDS``, ``FDA``)
Zeiss Cirrus raw          ``.img``                     oct-converter (``IMG``, 1024x512 B-scans)
========================  ===========================  ==================================================

:func:`read_volume_info` reads what identifies a volume (patient id, laterality, visit date, device, DICOM UIDs,
frame count and size) and checks the file is complete; :func:`read_frames` decodes the B-scans as 8-bit greyscale
(cached for the few most recent volumes, since a training epoch reads the frames of one volume one by one).
A file that cannot be used raises :class:`VolumeReadError` (an :class:`~kdcore.images.ImageReadError`) naming
the file and the reason.

Example:
    >>> select_frames(49, parse_selection("central"))
    [24]
    >>> select_frames(10, parse_selection({"central_k": 3}))
    [4, 5, 6]
    >>> select_frames(10, parse_selection("every:4"))
    [0, 4, 8]
"""

from __future__ import annotations

import datetime as _dt
import os
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from kdcore.errors import ConfigError
from kdcore.images import ImageReadError

__all__ = ["VolumeInfo", "VolumeReadError", "Selection", "OPT_SOP_CLASS", "VOLUME_SUFFIXES", "READERS",
           "volume_kind", "read_volume_info", "read_frames", "read_frame", "parse_selection", "select_frames"]

OPT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.5.4"  # Ophthalmic Tomography Image Storage
VOLUME_SUFFIXES = {".dcm": "dicom", ".dicom": "dicom", ".vol": "heyex_vol", ".xml": "heyex_xml", ".e2e": "e2e",
                   ".fds": "fds", ".fda": "fda", ".img": "zeiss_img"}
READERS = {"dicom": "pydicom", "heyex_vol": "eyepy", "heyex_xml": "eyepy", "e2e": "oct-converter",
           "fds": "oct-converter", "fda": "oct-converter", "zeiss_img": "oct-converter"}
DEVICES = {"heyex_vol": "Heidelberg Engineering Spectralis", "heyex_xml": "Heidelberg Engineering Spectralis",
           "e2e": "Heidelberg Engineering Spectralis", "fds": "Topcon", "fda": "Topcon", "zeiss_img": "Zeiss Cirrus"}
_CACHED_VOLUMES = 4


class VolumeReadError(ImageReadError):
    """A volume file that cannot be used (unreadable, truncated, unsupported); ``path`` and ``reason`` are kept."""


@dataclass(frozen=True)
class VolumeInfo:
    """What identifies one volume. ``patient_id`` is the file's own (raw, identifying: hash it before writing)."""

    path: str
    kind: str
    reader: str
    n_frames: int
    height: int
    width: int
    patient_id: str | None = None
    laterality: str | None = None  # "OD" / "OS"
    visit_date: str | None = None  # ISO date
    device: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None
    transfer_syntax: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def volume_kind(path: str | os.PathLike) -> str | None:
    """The format of ``path`` by suffix, or ``"dicom"`` for a suffix-less file with the DICOM preamble."""
    path = Path(path)
    kind = VOLUME_SUFFIXES.get(path.suffix.lower())
    if kind is None and path.suffix == "" and path.is_file():
        with open(path, "rb") as f:
            head = f.read(132)
        if head[128:132] == b"DICM":
            return "dicom"
    return kind


# --------------------------------------------------------------------------------------------------- metadata

def _iso_date(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.strftime("%Y-%m-%d")
    text = str(value).strip()
    if len(text) == 8 and text.isdigit():  # DICOM DA
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text[:10]


def _laterality(value: Any) -> str | None:
    text = str(value or "").strip().upper()
    return {"R": "OD", "OD": "OD", "RIGHT": "OD", "L": "OS", "OS": "OS", "LEFT": "OS"}.get(text)


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def read_volume_info(path: str | os.PathLike) -> VolumeInfo:
    """Identify a volume and check it is complete (DICOM: header and pixel-data length; vendors: a full parse)."""
    path = Path(path)
    kind = volume_kind(path)
    if kind is None:
        raise VolumeReadError(path, f"unsupported file type {path.suffix or '(no suffix)'!r}: not one of "
                                    f"{', '.join(sorted(VOLUME_SUFFIXES))} nor a DICOM file")
    if not path.is_file():
        raise VolumeReadError(path, "file not found")
    if path.stat().st_size == 0:
        raise VolumeReadError(path, "empty file (0 bytes)")
    if kind == "dicom":
        return _dicom_info(path)
    info, _ = _vendor_volume(path, kind)
    return info


_CACHE: "OrderedDict[tuple, np.ndarray]" = OrderedDict()


def _cache_key(path: Path) -> tuple:
    try:
        stat = path.stat()
    except OSError as exc:
        raise VolumeReadError(path, f"cannot read ({exc.strerror or exc})") from None
    return str(path.absolute()), stat.st_mtime_ns, stat.st_size  # a rewritten file is decoded again


def read_frames(path: str | os.PathLike) -> np.ndarray:
    """Every B-scan of the volume as uint8 (N, H, W), in acquisition order (the last few volumes are cached)."""
    path = Path(path)
    key = _cache_key(path)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    kind = volume_kind(path)
    if kind is None:
        raise VolumeReadError(path, "unsupported file type")
    frames = _dicom_frames(path) if kind == "dicom" else _vendor_volume(path, kind)[1]
    frames.setflags(write=False)  # shared by every reader of the cache
    _CACHE[key] = frames
    while len(_CACHE) > _CACHED_VOLUMES:
        _CACHE.popitem(last=False)
    return frames


def read_frame(path: str | os.PathLike, frame: int) -> np.ndarray:
    """One B-scan (0-based ``frame``) as a uint8 (H, W) array.

    A cached volume is sliced; a DICOM file not in the cache has only this frame decoded (random access during
    training would otherwise decode whole volumes per B-scan); vendor exports are parsed whole and cached.
    """
    path = Path(path)
    key = _cache_key(path)
    frames = _CACHE.get(key)
    if frames is None and volume_kind(path) == "dicom":
        frames = _dicom_frames(path, frame)
        frame = 0
    elif frames is None:
        frames = read_frames(path)
    if not 0 <= frame < len(frames):
        raise VolumeReadError(path, f"frame {frame} does not exist (the volume has {len(frames)} B-scans)")
    return frames[frame]


def to_uint8(array: np.ndarray, bits_stored: int | None = None) -> np.ndarray:
    """8-bit greyscale: integers scaled from their stored bit depth, floats from [0, 1] or their maximum."""
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.integer):
        top = float(2 ** (bits_stored or array.dtype.itemsize * 8) - 1)
        return np.clip(np.rint(array.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
    finite = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    top = 1.0 if finite.max(initial=0.0) <= 1.0 else finite.max()
    return np.clip(np.rint(finite * (255.0 / top)), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------------ DICOM

def _dicom_dataset(path: Path):
    import logging

    import pydicom
    from pydicom.errors import InvalidDicomError

    # A truncated file is reported once, by name and reason, by the VolumeReadError below; pydicom's own log
    # warning about it would be a second line.
    logging.getLogger("pydicom").setLevel(logging.ERROR)

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise VolumeReadError(path, f"not a DICOM file ({exc})") from None
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VolumeReadError(path, f"unreadable DICOM file, probably truncated ({type(exc).__name__}: {exc})") \
            from None
    ended = [str(w.message) for w in caught if "end of file" in str(w.message).lower()]
    if ended:  # pydicom reads what is there and warns; a partial volume must not pass for a whole one
        raise VolumeReadError(path, f"truncated DICOM file: {ended[0].split(' in file ')[0]}")
    return ds


def _dicom_info(path: Path, ds: Any = None) -> VolumeInfo:
    ds = _dicom_dataset(path) if ds is None else ds
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class != OPT_SOP_CLASS:
        name = getattr(ds.get("SOPClassUID"), "name", "") or "unknown"
        raise VolumeReadError(path, f"unsupported DICOM SOP class {sop_class or '(none)'} ({name}); only Ophthalmic "
                                    f"Tomography Image Storage ({OPT_SOP_CLASS}) holds OCT B-scans")
    if "PixelData" not in ds:
        raise VolumeReadError(path, "DICOM file without pixel data (truncated or header only)")
    missing = [k for k in ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel") if k not in ds]
    if missing:
        raise VolumeReadError(path, f"DICOM pixel description incomplete: missing {', '.join(missing)}")
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and not syntax.is_compressed:
        expected = n_frames * ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
        if len(ds.PixelData) < expected:
            raise VolumeReadError(path, f"truncated pixel data: {len(ds.PixelData)} of {expected} bytes for "
                                        f"{n_frames} frame(s) of {ds.Columns}x{ds.Rows}")
    device = " ".join(str(ds.get(k, "")).strip() for k in ("Manufacturer", "ManufacturerModelName")).strip()
    return VolumeInfo(
        path=str(path), kind="dicom", reader=READERS["dicom"], n_frames=n_frames, height=int(ds.Rows),
        width=int(ds.Columns), patient_id=_text(ds.get("PatientID")),
        laterality=_laterality(ds.get("ImageLaterality") or ds.get("Laterality")),
        visit_date=_iso_date(ds.get("AcquisitionDateTime", "")[:8] if ds.get("AcquisitionDateTime") else
                             ds.get("StudyDate") or ds.get("SeriesDate") or ds.get("ContentDate")),
        device=device or None, study_uid=_text(ds.get("StudyInstanceUID")),
        series_uid=_text(ds.get("SeriesInstanceUID")), sop_instance_uid=_text(ds.get("SOPInstanceUID")),
        sop_class_uid=sop_class, transfer_syntax=str(syntax) if syntax is not None else None)


def _dicom_frames(path: Path, index: int | None = None) -> np.ndarray:
    """All frames, or only frame ``index`` (as a stack of one), decoded to uint8 greyscale."""
    ds = _dicom_dataset(path)
    info = _dicom_info(path, ds)
    if index is not None and not 0 <= index < info.n_frames:
        raise VolumeReadError(path, f"frame {index} does not exist (the volume has {info.n_frames} B-scans)")
    try:
        if index is None:
            pixels = ds.pixel_array  # pydicom picks the decoder (pylibjpeg, gdcm, numpy RLE...) for the syntax
        else:
            from pydicom.pixels import pixel_array

            pixels = pixel_array(ds, index=index)
    except Exception as exc:  # noqa: BLE001 - every decoder has its own errors; all mean "cannot decode"
        raise VolumeReadError(path, f"cannot decode pixel data ({info.transfer_syntax}): "
                                    f"{type(exc).__name__}: {exc}") from None
    n_frames = info.n_frames if index is None else 1
    samples = int(ds.SamplesPerPixel)
    if samples == 3:
        import cv2

        pixels = pixels.reshape(n_frames, info.height, info.width, 3)
        pixels = np.stack([cv2.cvtColor(np.ascontiguousarray(to_uint8(f, ds.get("BitsStored"))), cv2.COLOR_RGB2GRAY)
                           for f in pixels])
    else:
        pixels = to_uint8(pixels.reshape(n_frames, info.height, info.width), ds.get("BitsStored"))
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":  # 0 is white there
        pixels = 255 - pixels
    return np.ascontiguousarray(pixels)


# ---------------------------------------------------------------------------------------------------- vendors

def _vendor_volume(path: Path, kind: str) -> tuple[VolumeInfo, np.ndarray]:
    """Parse a vendor export with its library; every library error becomes a :class:`VolumeReadError`."""
    try:
        if kind in ("heyex_vol", "heyex_xml"):
            patient, laterality, visit, data = _eyepy(path, kind)
        else:
            patient, laterality, visit, data = _oct_converter(path, kind)
    except VolumeReadError:
        raise
    except ImportError as exc:
        raise VolumeReadError(path, f"the reader for {kind} files is not installed ({exc}); "
                                    "pip install 'kdvision[clinic]' (see README)") from None
    except Exception as exc:  # noqa: BLE001 - construct/struct/XML errors all mean a broken or unknown export
        reason = str(exc).splitlines()[0][:200] if str(exc) else ""
        if "fromstring" in reason:  # oct-converter 0.7's Topcon readers call np.fromstring, which numpy 2 removed
            raise VolumeReadError(path, f"{READERS[kind]} {_version('oct-converter')} cannot read {kind} files with "
                                        f"numpy {np.__version__} (it calls np.fromstring, removed in numpy 2)") \
                from None
        raise VolumeReadError(path, f"cannot read {kind} export with {READERS[kind]} "
                                    f"({type(exc).__name__}{': ' + reason if reason else ''})") from None
    frames = np.asarray(data)
    if frames.ndim != 3 or min(frames.shape) == 0:
        raise VolumeReadError(path, f"{READERS[kind]} returned no B-scan stack (shape {frames.shape})")
    frames = np.ascontiguousarray(to_uint8(frames))
    info = VolumeInfo(path=str(path), kind=kind, reader=READERS[kind], n_frames=int(frames.shape[0]),
                      height=int(frames.shape[1]), width=int(frames.shape[2]), patient_id=_text(patient),
                      laterality=_laterality(laterality), visit_date=_iso_date(visit), device=DEVICES[kind])
    return info, frames


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(unknown version)"


def _eyepy(path: Path, kind: str) -> tuple[Any, Any, Any, np.ndarray]:
    import logging

    logging.getLogger("eyepy").setLevel(logging.ERROR)  # layer-naming chatter, not a problem with the file
    if kind == "heyex_vol":
        from eyepy.io.he.vol_reader import HeVolReader

        reader = HeVolReader(path)
        parsed = reader.parsed_file
        if int(parsed.n_bscans) != len(parsed.bscans):
            raise VolumeReadError(path, f"header announces {parsed.n_bscans} B-scans, {len(parsed.bscans)} found")
        volume = reader.volume
        return parsed.patient_id, parsed.scan_position, parsed.visit_date, volume.data
    from eyepy.io.he.xml_reader import HeXmlReader

    reader = HeXmlReader(path)
    values = reader.parsed_values
    volume = reader.volume
    if values.get("n_bscans") is not None and int(values["n_bscans"]) != volume.data.shape[0]:
        raise VolumeReadError(path, f"XML announces {values['n_bscans']} B-scans, {volume.data.shape[0]} read")
    return values.get("patient_id"), values.get("scan_position"), values.get("visit_date"), volume.data


def _oct_converter(path: Path, kind: str) -> tuple[Any, Any, Any, np.ndarray]:
    from oct_converter import readers

    if kind == "e2e":
        volumes = readers.E2E(str(path)).read_oct_volume()
        if len(volumes) != 1:
            raise VolumeReadError(path, f"E2E file holds {len(volumes)} OCT volumes; export one volume per file")
        volume = volumes[0]
    elif kind == "fds":
        volume = readers.FDS(str(path)).read_oct_volume()
    elif kind == "fda":
        volume = readers.FDA(str(path)).read_oct_volume()
    else:
        volume = readers.IMG(str(path)).read_oct_volume()
    return volume.patient_id, volume.laterality, volume.acquisition_date, np.stack(list(volume.volume))


# -------------------------------------------------------------------------------------------------- selection

@dataclass(frozen=True)
class Selection:
    """Which B-scans of a volume are used: ``all``, ``central``, ``central_k`` (``k`` around the centre) or
    ``every`` (every ``n``-th from the first)."""

    policy: str = "all"
    k: int | None = None
    n: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


def parse_selection(value: str | Mapping[str, int] | Selection | None) -> Selection:
    """``"all"``, ``"central"``, ``{"central_k": K}`` / ``"central_k:K"`` or ``{"every": N}`` / ``"every:N"``."""
    if value is None:
        return Selection()
    if isinstance(value, Selection):
        return value
    if isinstance(value, Mapping):
        if len(value) != 1:
            raise ConfigError("data.bscans: expected one of all, central, {central_k: K}, {every: N}; "
                              f"got {dict(value)}")
        (name, number), = value.items()
    else:
        name, _, number = str(value).partition(":")
        number = number or None
    name = str(name).strip()
    if name in ("all", "central") and number is None:
        return Selection(name)
    if name in ("central_k", "every"):
        try:
            count = int(str(number).strip())
        except ValueError:
            count = 0
        if count < 1:
            raise ConfigError(f"data.bscans: {name} needs a whole number >= 1, got {number!r}")
        return Selection(name, k=count) if name == "central_k" else Selection(name, n=count)
    raise ConfigError(f"data.bscans: unknown B-scan selection {value!r} (all, central, central_k: K, every: N)")


def select_frames(n_frames: int, selection: Selection) -> list[int]:
    """The 0-based frames ``selection`` keeps of a volume with ``n_frames`` B-scans (the centre is ``n // 2``)."""
    if n_frames <= 0:
        return []
    centre = n_frames // 2
    if selection.policy == "central":
        return [centre]
    if selection.policy == "central_k":
        k = min(int(selection.k or 1), n_frames)
        start = min(max(0, centre - k // 2), n_frames - k)
        return list(range(start, start + k))
    if selection.policy == "every":
        return list(range(0, n_frames, int(selection.n or 1)))
    return list(range(n_frames))
