"""Pseudonymous patient ids: keyed hashes replace patient keys and image ids before anything is written.

The key is, in this order: the recipe's ``privacy.salt``; the secret in ``$KDVISION_PRIVACY_SALT``; otherwise
derived from the data's own bytes (every image file under the data root), so two runs, fold jobs on other
machines, ``medkd split`` and ``medkd audit`` of the same data hash identically, while nobody without the
image files can recompute the key and test guessed case numbers against the hashes. The key is never written.
The fold split is made on the raw patient keys and only renamed afterwards, so it never depends on the key.

Example:
    >>> hashed = patient_hasher(b"k" * 32)
    >>> hashed("CNV/12") == hashed("CNV/12") != hashed("CNV/13"), len(hashed("CNV/12"))
    (True, 13)
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable

from .data import OCTDataset
from .data.records import IMAGE_SUFFIXES
from .data.volumes import VOLUME_SUFFIXES

__all__ = ["patient_hasher", "pseudonymise", "privacy_key", "data_key", "Redactor", "hash_ids_enabled",
           "SALT_ENV"]

SALT_ENV = "KDVISION_PRIVACY_SALT"
DATA_ROOT_TOKEN = "<data root>"


def hash_ids_enabled(recipe: Any, fmt: str) -> bool:
    """``privacy.hash_patient_ids``, or by default on for NEH-layout data that is not the run's own synthetic and
    for volume files (their patient ids come from the files' own metadata)."""
    hash_ids = recipe.privacy.hash_patient_ids
    if hash_ids is None:
        hash_ids = fmt in ("neh", "volumes") and recipe.data.format != "synthetic"
    return bool(hash_ids)


def data_key(root: str | os.PathLike) -> bytes:
    """A key only the holder of the data can compute: BLAKE2b over every image file's relative path and bytes."""
    root = Path(root)
    digest = hashlib.blake2b(b"kdvision-privacy-v1", digest_size=32)
    # Volume files too: a folder of DICOM series alone must still give a key only its holder can compute.
    suffixes = IMAGE_SUFFIXES | set(VOLUME_SUFFIXES)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode("utf-8", "surrogateescape") + b"\0")
        try:
            digest.update(hashlib.blake2b(path.read_bytes(), digest_size=32).digest())
        except OSError as exc:  # an unreadable file still counts, by its name and error (the audit reports it)
            digest.update(str(exc.errno).encode())
    return digest.digest()


def privacy_key(salt: str | None, root: str | os.PathLike, run_path: Path | None = None) -> bytes:
    """The hashing key: the recipe's salt, ``$KDVISION_PRIVACY_SALT``, a ``privacy_salt`` file left by a run
    started before keys were derived (so it resumes), else :func:`data_key`."""
    if salt:
        return salt.encode()
    secret = os.environ.get(SALT_ENV)
    if secret:
        return secret.encode()
    if run_path is not None and (run_path / "privacy_salt").is_file():
        return (run_path / "privacy_salt").read_text(encoding="utf-8").strip().encode()
    return data_key(root)


def patient_hasher(key: bytes) -> Callable[[str], str]:
    """``patient key -> "P" + 12 hex digits`` (keyed BLAKE2b)."""
    key = hashlib.blake2b(key, digest_size=32).digest()  # any length of secret becomes a valid BLAKE2b key

    def hashed(patient: str) -> str:
        return "P" + hashlib.blake2b(patient.encode("utf-8", "surrogateescape"), key=key,
                                     digest_size=6).hexdigest()

    return hashed


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+", text))


def _pseudonymous_id(image_id: str, patient: str, hashed_patient: str, hashed: Callable[[str], str]) -> str:
    """``<hash>/<path below the patient folder>`` (NEH: ``<hash>/OD/001_Normal.jpg``; elsewhere the whole relative
    path), so two visits' ``scan1.jpg`` stay two ids; a part that still shows the patient's number is hashed."""
    parts = image_id.split("/")
    below = None
    key_parts = patient.split("/")
    for start in range(len(parts) - len(key_parts)):
        if parts[start:start + len(key_parts)] == key_parts:
            below = parts[start + len(key_parts):]
            break
    if below is None:  # e.g. a manifest's own layout: keep all of it (visits may share file names)
        below = parts
    numbers = _numbers(patient)
    safe = []
    for part in below:
        if _numbers(part) & numbers or part == patient:
            part = "f" + hashed(image_id + "\0" + part)[1:] + os.path.splitext(part)[1]
        safe.append(part)
    return "/".join([hashed_patient, *safe])


def pseudonymise(dataset: OCTDataset, hashed: Callable[[str], str]) -> OCTDataset:
    """Hash patient keys and image ids; every record keeps its raw patient key in memory only
    (``raw_patient``) so that the fold split is made on the data, not on the key."""
    records = []
    for record in dataset.records:
        patient = hashed(record.patient)
        image_id = _pseudonymous_id(record.image_id, record.patient, patient, hashed)
        records.append(replace(record, patient=patient, image_id=image_id, raw_patient=record.patient,
                               raw_id=record.image_id))
    ids = [r.image_id for r in records]
    if len(set(ids)) != len(ids):  # cannot happen unless two raw ids were equal already
        from kdcore.errors import DataError

        raise DataError(f"{dataset.root}: pseudonymised image ids are not unique")
    return replace(dataset, records=records, notes=dataset.notes + ["patient ids replaced by keyed hashes"])


class Redactor:
    """Rewrites text for files meant to be shared: raw image paths and ids become pseudonymous ids, raw patient
    keys become their hashes, and the data root becomes ``<data root>``.

    Text is cut into path-like tokens and each is looked up (a dict, not one regular expression of every id:
    a dataset has tens of thousands), so a log line costs microseconds.

    Example:
        >>> r = Redactor({"/d/CNV/7/OD/1.jpg": "Pab/OD/1.jpg"}, roots=["/d"], patients={"CNV/7": "Pab"})
        >>> r("patient 'CNV/7' at /d/CNV/7/OD/1.jpg:3 and /d/extra.csv, /d/CNV/7/OS/9.jpg")
        "patient 'Pab' at Pab/OD/1.jpg:3 and <data root>/extra.csv, <data root>/Pab/OS/9.jpg"
    """

    _TOKEN = re.compile(r"[^\s'\"<>(),;:=\[\]{}]+")

    def __init__(self, mapping: dict[str, str], roots: Iterable[str] = (), patients: dict[str, str] | None = None):
        self.mapping = dict(mapping)
        self.roots = sorted({str(r).rstrip("/") for r in roots if r and len(str(r).rstrip("/")) > 1},
                            key=len, reverse=True)
        self.patients = {tuple(k.split("/")): v for k, v in (patients or {}).items() if k}
        self._widths = sorted({len(k) for k in self.patients}, reverse=True)

    @classmethod
    def for_dataset(cls, dataset: OCTDataset, raw_root: str | os.PathLike | None = None) -> "Redactor":
        mapping: dict[str, str] = {}
        patients: dict[str, str] = {}
        root = Path(raw_root or dataset.root)
        for record in dataset.records:
            if record.raw_id is None:
                continue
            for variant in {str(record.path), str(Path(record.path).absolute()), str(root / record.raw_id),
                            record.raw_id}:
                mapping[variant] = record.image_id
            if record.raw_patient:
                patients[record.raw_patient] = record.patient
        roots = {str(root), str(root.absolute())}
        try:
            roots.add(str(root.resolve()))
        except OSError:
            pass
        return cls(mapping, roots, patients)

    def _components(self, text: str) -> str:
        """Patient keys that appear as whole path components (``CNV/7`` in ``CNV/7/OD/x.jpg``) become hashes."""
        if not self.patients:
            return text
        parts, out, i = text.split("/"), [], 0
        while i < len(parts):
            for width in self._widths:
                key = tuple(parts[i:i + width])
                if len(key) == width and key in self.patients:
                    out.append(self.patients[key])
                    i += width
                    break
            else:
                out.append(parts[i])
                i += 1
        return "/".join(out)

    def _token(self, match: re.Match) -> str:
        token = match.group(0)
        if token in self.mapping:
            return self.mapping[token]
        for root in self.roots:
            if token == root:
                return DATA_ROOT_TOKEN
            if token.startswith(root + "/"):
                rest = token[len(root) + 1:]
                return f"{DATA_ROOT_TOKEN}/{self.mapping.get(rest) or self._components(rest)}"
        return self._components(token)

    def __call__(self, text: str) -> str:
        if not isinstance(text, str) or not (self.mapping or self.roots or self.patients):
            return text
        return self._TOKEN.sub(self._token, text)

    def json(self, obj: Any) -> Any:
        """The same rewrite applied to every string of a JSON-like object (keys included)."""
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, dict):
            return {self(k) if isinstance(k, str) else k: self.json(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.json(v) for v in obj]
        return obj
