"""What ships beside an exported model: the ``model.json`` contract, and no absolute path of this machine.

The sidecar holds the preprocessing contract and provenance, so an application needs nothing from the
training code. :func:`assert_no_absolute_paths` refuses an export folder that mentions the exporting
machine's folders (home, Python prefix, working directory, run and data folders).
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ..atomic import atomic_write_json
from ..errors import KDError

__all__ = ["SIDECAR", "SIDECAR_FORMAT", "SIDECAR_VERSION", "write_sidecar", "read_sidecar", "find_absolute_paths",
           "assert_no_absolute_paths", "COMPLETE_MARKER", "write_export_marker", "check_export_complete"]

COMPLETE_MARKER = "export_complete.json"  # written last by an export: the folder is whole

SIDECAR = "model.json"  # beside model.onnx / model.ts / model.safetensors: Path(f).with_suffix(".json")
SIDECAR_FORMAT, SIDECAR_VERSION = "kdvision-export", 1
# What every predictor needs to prepare an input and read an output; task-specific keys are checked by each task.
REQUIRED_KEYS = ("task", "arch", "num_outputs", "input.size", "input.channels", "input.mean", "input.std")


def write_sidecar(path: str | os.PathLike, contract: Mapping[str, Any]) -> Path:
    """Write the preprocessing contract beside an exported model (``model.onnx`` -> ``model.json``)."""
    path = Path(path)
    target = path if path.suffix == ".json" else path.with_suffix(".json")
    atomic_write_json(target, dict(contract))
    return target


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    target = path if path.suffix == ".json" else path.with_suffix(".json")
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KDError(f"{target}: preprocessing sidecar of {path.name} not found (every export has one)") from None
    except ValueError as exc:
        raise KDError(f"{target}: invalid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise KDError(f"{target}: not an export sidecar (no \"format\": \"{SIDECAR_FORMAT}\")")
    version = data.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= SIDECAR_VERSION:
        raise KDError(f"{target}: format_version {version!r} is not one this package reads (1..{SIDECAR_VERSION}); "
                      "upgrade kdvision or re-export the model")
    missing = [key for key in REQUIRED_KEYS if _lookup(data, key) is None]
    if missing:
        raise KDError(f"{target}: missing key(s) {', '.join(missing)} of the preprocessing contract")
    return data


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, Mapping) or part not in data:
            return None
        data = data[part]
    return data


# ------------------------------------------------------------------------------------------- path hygiene

def find_absolute_paths(folder: str | os.PathLike, needles: Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """``(file, needle)`` for every file under ``folder`` whose bytes mention one of the ``needles`` folders.

    A needle counts when followed by ``/``, a quote, a space or a line end, so ``/work`` does not match
    ``/workspace``. Zip archives (TorchScript, ``torch.save``) are also searched member by member, as some
    members are compressed; such a hit names the member: ``model.ts:model/code/x.debug_pkl``.
    """
    folder = Path(folder)
    roots = sorted({str(n).rstrip("/") for n in needles if len(str(n).rstrip("/")) >= 5}, key=len, reverse=True)
    hits = []
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(file.relative_to(folder))
        for where, data in _contents(file, name):
            root = next((r for r in roots if _mentions(data, r)), None)
            if root is not None:
                hits.append((where, root))
                break
    return hits


def _mentions(data: bytes, root: str) -> bool:
    ends = ("/", '"', "'", " ", "\n", "\\")
    return any((root + end).encode() in data for end in ends) or data.endswith(root.encode())


def _contents(file: Path, name: str) -> Iterator[tuple[str, bytes]]:
    """The file's bytes, then each member of a zip archive decompressed."""
    yield name, file.read_bytes()
    if zipfile.is_zipfile(file):
        with zipfile.ZipFile(file) as archive:
            for member in archive.infolist():
                if member.compress_type != zipfile.ZIP_STORED:  # stored members were in the raw bytes
                    yield f"{name}:{member.filename}", archive.read(member)


def assert_no_absolute_paths(folder: str | os.PathLike, extra: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse an export that mentions this machine's folders (home, Python prefix, working dir, the folders
    Python imports from, ``extra``)."""
    folder = Path(folder)
    imports = [Path(p) for p in sys.path if p and os.path.isabs(p) and os.path.isdir(p)]
    needles = [Path.home(), sys.prefix, sys.base_prefix, Path.cwd(), folder.resolve(), *imports, *extra]
    needles += [Path(p).resolve() for p in extra]
    needles += [p.resolve() for p in needles if isinstance(p, Path)]  # symlinked homes and folders
    hits = find_absolute_paths(folder, [n for n in needles if str(n) not in ("/", "")])
    if hits:
        listed = ", ".join(f"{file} contains {needle!r}" for file, needle in hits[:5])
        raise KDError(f"{folder}: exported files contain absolute paths of this machine: {listed}")


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_export_marker(folder: str | os.PathLike) -> Path:
    """Record the SHA-256 of every file of a finished export folder in ``export_complete.json``, written last:
    an export killed earlier has no marker, and a file edited later (a reordered ``classes`` list in
    ``model.json`` would relabel the outputs) no longer matches."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): _sha256(p) for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != COMPLETE_MARKER and not p.name.endswith(".tmp")}
    target = folder / COMPLETE_MARKER
    atomic_write_json(target, {"format": SIDECAR_FORMAT, "files": files})
    return target


def check_export_complete(folder: str | os.PathLike, used: Iterable[str | os.PathLike]) -> None:
    """Refuse an export folder without its completion marker, or whose ``used`` files changed since."""
    folder = Path(folder)
    marker = folder / COMPLETE_MARKER
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8")).get("files", {})
    except FileNotFoundError:
        raise KDError(f"{folder}: incomplete export (no {COMPLETE_MARKER}: it was interrupted or failed); "
                      "run the export again") from None
    except (ValueError, AttributeError):
        raise KDError(f"{marker}: not a valid completion record; run the export again") from None
    for file in used:
        name = Path(file).relative_to(folder).as_posix() if Path(file).is_absolute() else Path(file).as_posix()
        expected = recorded.get(name)
        if expected is None:
            raise KDError(f"{folder / name}: not part of the finished export (missing from {COMPLETE_MARKER})")
        if _sha256(folder / name) != expected:
            hint = (" (its class order and contract are bound to the exported weights)" if name == SIDECAR else "")
            raise KDError(f"{folder / name}: changed after the export was made{hint}; restore it or export again")
