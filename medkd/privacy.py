"""Pseudonymous patient ids: salted hashes replace patient keys before anything is written."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import replace
from pathlib import Path

from kdcore.atomic import atomic_write_text

from .data import OCTDataset

__all__ = ["pseudonymise", "load_or_create_salt"]


def load_or_create_salt(run_path: Path, salt: str | None) -> str:
    """The recipe's salt, or one kept in the run folder so resumed runs hash identically (never exported)."""
    if salt:
        return salt
    path = run_path / "privacy_salt"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    created = secrets.token_hex(16)
    atomic_write_text(path, created + "\n")
    return created


def pseudonymise(dataset: OCTDataset, run_path: Path, salt: str | None) -> OCTDataset:
    from kdcore.experiment import main_process_first

    main_process_first(lambda: load_or_create_salt(run_path, salt))  # rank 0 creates it, then all read it
    key = load_or_create_salt(run_path, salt).encode()

    def hashed(patient: str) -> str:
        return "P" + hashlib.blake2b(patient.encode(), key=key[:64], digest_size=6).hexdigest()

    records = [replace(r, patient=hashed(r.patient)) for r in dataset.records]
    return replace(dataset, records=records, notes=dataset.notes + ["patient ids replaced by salted hashes"])
