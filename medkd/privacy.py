"""Pseudonymous patient ids: salted hashes replace patient keys before anything is written.

The salt is the recipe's, or a random one kept in the run folder (``privacy_salt``) so a resumed run hashes
identically; it is never exported.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import replace
from pathlib import Path
from typing import Callable

from kdcore.atomic import atomic_write_text

from .data import OCTDataset

__all__ = ["patient_hasher", "pseudonymise"]


def _load_or_create_salt(run_path: Path, salt: str | None) -> str:
    if salt:
        return salt
    path = run_path / "privacy_salt"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    created = secrets.token_hex(16)
    atomic_write_text(path, created + "\n")
    return created


def patient_hasher(run_path: Path, salt: str | None) -> Callable[[str], str]:
    """``patient key -> "P" + 12 hex digits`` (keyed BLAKE2b), the same for every call in one run."""
    from kdcore.experiment import main_process_first

    main_process_first(lambda: _load_or_create_salt(run_path, salt))  # rank 0 creates it, then all read it
    key = _load_or_create_salt(run_path, salt).encode()[:64]

    def hashed(patient: str) -> str:
        return "P" + hashlib.blake2b(patient.encode(), key=key, digest_size=6).hexdigest()

    return hashed


def pseudonymise(dataset: OCTDataset, hashed: Callable[[str], str]) -> OCTDataset:
    """Hash patient keys, and image ids too (NEH paths hold the case number): ``<hash>/<eye>/<file name>``."""
    records = []
    for record in dataset.records:
        patient = hashed(record.patient)
        image_id = "/".join(part for part in (patient, record.eye, Path(record.image_id).name) if part)
        records.append(replace(record, patient=patient, image_id=image_id))
    return replace(dataset, records=records, notes=dataset.notes + ["patient ids replaced by salted hashes"])
