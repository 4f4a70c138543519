"""Benchmark inputs: synthetic B-scans written as real JPEG files by the project's generator, read back by the
real NEH loader (the same path ``medkd run`` takes on a synthetic recipe)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from medkd.data import OCTDataset, load_oct_dataset
from medkd.synth import write_synthetic_oct

__all__ = ["write_oct_dataset"]


def write_oct_dataset(root: str | Path, patients: int, image_size: tuple[int, int], *, seed: int = 0,
                      scans_per_eye: tuple[int, int] = (2, 4), lesion_strength: float = 1.0, noise: float = 1.0,
                      classes: Sequence[str] = ("NORMAL", "DRUSEN", "CNV"), subset: str = "all") -> OCTDataset:
    """Write ``patients`` synthetic OCT volumes (``image_size`` = (width, height)) and load them as NEH."""
    write_synthetic_oct(root, patients, seed=seed, classes=classes, scans_per_eye=tuple(scans_per_eye),
                        image_size=tuple(image_size), lesion_strength=lesion_strength, noise=noise, overwrite=True)
    return load_oct_dataset(root, "neh", subset=subset, classes=list(classes))
