"""A synthetic OCT dataset written in the NEH layout, so demos and tests run the real NEH loader on it.

``out_dir/{CLASS}/{case}/{OD|OS}/{NNN}_{Label}.jpg`` plus ``out_dir/data_information.csv``; case numbers restart
in every class folder and diseased volumes hold lesion-free (NORMAL-labelled) peripheral B-scans, exactly the
two traps of the real data.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from kdcore.atomic import atomic_write_text
from kdcore.errors import ConfigError
from kdcore.seeding import derive_seed

from .anatomy import Anatomy, sample_anatomy
from .bscan import render_bscan
from .lesions import LESIONS

__all__ = ["SYNTH_CLASSES", "SynthSummary", "write_synthetic_oct"]

SYNTH_CLASSES = ("NORMAL", *LESIONS)
CSV_NAME = "data_information.csv"


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`write_synthetic_oct` wrote (all counts follow from the seed and the arguments)."""

    root: Path
    csv_path: Path
    classes: tuple[str, ...]
    n_patients: int
    n_eyes: int
    n_images: int
    images_per_label: dict[str, int]
    patients_per_class: dict[str, int]
    worst_case_images: int  # B-scans whose label equals the patient class (NEH subset="worst_case")
    rows: list[dict[str, str]] = field(repr=False, default_factory=list)

    def to_dict(self) -> dict:
        return {"root": str(self.root), "csv_path": str(self.csv_path), "classes": list(self.classes),
                "n_patients": self.n_patients, "n_eyes": self.n_eyes, "n_images": self.n_images,
                "images_per_label": dict(self.images_per_label), "patients_per_class": dict(self.patients_per_class),
                "worst_case_images": self.worst_case_images}


def _file_label(label: str) -> str:
    """How NEH file names spell a label: ``Normal``, ``Drusen``, but ``CNV``."""
    return label if len(label) <= 3 else label.capitalize()


def _validate(n_patients: int, classes: Sequence[str], scans_per_eye: tuple[int, int], image_size: tuple[int, int],
              normal_fraction: float, positive: dict[str, float]) -> tuple[str, ...]:
    names = tuple(str(c).upper() for c in classes)
    unknown = [c for c in names if c not in SYNTH_CLASSES]
    if unknown or not names or len(set(names)) != len(names):
        raise ConfigError(f"classes: expected distinct names from {SYNTH_CLASSES}, got {list(classes)}")
    if "NORMAL" not in names and normal_fraction > 0:
        raise ConfigError("normal_fraction: lesion-free B-scans are labelled NORMAL, which is not in classes; "
                          "add NORMAL or set normal_fraction=0")
    if n_patients < len(names):
        raise ConfigError(f"n_patients: need at least one patient per class ({len(names)}), got {n_patients}")
    lo, hi = scans_per_eye
    if not 1 <= lo <= hi:
        raise ConfigError(f"scans_per_eye: expected (low, high) with 1 <= low <= high, got {scans_per_eye}")
    if image_size[0] < 64 or image_size[1] < 48:
        raise ConfigError(f"image_size: expected (width, height) of at least (64, 48), got {image_size}")
    if not 0 <= normal_fraction < 1:
        raise ConfigError(f"normal_fraction: expected 0 <= value < 1, got {normal_fraction}")
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key}: expected a positive number, got {value}")
    return names


def _fellow_eye(rng: np.random.Generator, first: Anatomy) -> Anatomy:
    """The other eye of the same patient: mirrored, slightly different, same scanner settings."""
    w, h = first.width, first.height
    return replace(first, fovea_x=w - first.fovea_x + rng.normal(0, 0.01) * w, tilt=-first.tilt * rng.uniform(0.5, 1.2),
                   bruch_row=first.bruch_row + rng.normal(0, 0.02) * h, nfl_side=-first.nfl_side,
                   thickness=first.thickness * rng.uniform(0.95, 1.05),
                   vessels=tuple((w - x, wd, s) for x, wd, s in first.vessels))


def _scan_plan(rng: np.random.Generator, patient_class: str, names: tuple[str, ...], n_scans: int,
               normal_fraction: float, secondary_fraction: float) -> list[tuple[float, str, tuple[str, ...]]]:
    """``(position, label, lesions)`` per B-scan of one eye, ordered across the volume.

    Pathology is foveal: the most peripheral slices of a diseased eye are the lesion-free ones, at least one
    slice per eye shows the patient's disease (so ``worst_case`` keeps every patient).
    """
    span = rng.uniform(0.5, 0.95)
    positions = np.linspace(-span, span, n_scans) if n_scans > 1 else np.array([rng.uniform(-0.3, 0.3)])
    positions = positions + rng.normal(0, 0.03, n_scans)
    if patient_class == "NORMAL":
        return [(float(p), "NORMAL", ()) for p in positions]
    by_periphery = list(np.argsort(-np.abs(positions), kind="stable"))
    n_free = min(int(rng.binomial(n_scans, normal_fraction)), n_scans - 1)
    n_secondary = 0
    if patient_class == "CNV" and "DRUSEN" in names:
        n_secondary = int(rng.binomial(n_scans - n_free - 1, secondary_fraction))
    plan: list[tuple[float, str, tuple[str, ...]]] = [(0.0, "", ())] * n_scans
    for rank, i in enumerate(by_periphery):
        if rank < n_free:
            plan[i] = (float(positions[i]), "NORMAL", ())
        elif rank < n_free + n_secondary:
            plan[i] = (float(positions[i]), "DRUSEN", ("DRUSEN",))
        else:
            extra = ("DRUSEN",) if patient_class == "CNV" and rng.random() < 0.4 else ()
            plan[i] = (float(positions[i]), patient_class, (*extra, patient_class))
    return plan


def write_synthetic_oct(out_dir: str | Path, n_patients: int, seed: int = 0,
                        classes: Sequence[str] = ("NORMAL", "DRUSEN", "CNV"), scans_per_eye: tuple[int, int] = (3, 6),
                        image_size: tuple[int, int] = (768, 496), lesion_strength: float = 1.0, noise: float = 1.0,
                        normal_fraction: float = 0.25, secondary_fraction: float = 0.15,
                        anatomy_variation: float = 1.0, two_eye_fraction: float = 0.6, jpeg_quality: int = 92,
                        overwrite: bool = False) -> SynthSummary:
    """Write ``n_patients`` synthetic OCT volumes in the NEH layout; byte-identical for the same arguments.

    Args:
        out_dir: created if needed; must not already hold a dataset unless ``overwrite`` (which removes only the
            class folders and CSV this function writes).
        n_patients: spread round-robin over ``classes`` (case numbers restart per class, as in NEH).
        classes: from ``NORMAL``, ``DRUSEN``, ``CNV``, ``DME``.
        scans_per_eye: inclusive range of B-scans per eye; 1-2 eyes per patient (``two_eye_fraction``).
        image_size: ``(width, height)``; NEH is 768x496, ``(384, 248)`` is four times faster.
        lesion_strength: lesion size (smaller = harder); ``noise``: speckle and noise floor (larger = harder).
        normal_fraction: expected share of lesion-free (NORMAL-labelled) B-scans in diseased eyes.
        secondary_fraction: share of drusen-only (DRUSEN-labelled) B-scans in CNV eyes.
        anatomy_variation: spread of anatomy and scanner settings between eyes (0 = all alike).

    Example:
        >>> import tempfile
        >>> s = write_synthetic_oct(tempfile.mkdtemp(), 3, image_size=(128, 96), scans_per_eye=(1, 2))
        >>> s.patients_per_class
        {'NORMAL': 1, 'DRUSEN': 1, 'CNV': 1}
    """
    names = _validate(n_patients, classes, tuple(scans_per_eye), tuple(image_size), normal_fraction,
                      {"lesion_strength": lesion_strength, "noise": noise, "jpeg_quality": jpeg_quality})
    width, height = int(image_size[0]), int(image_size[1])
    out = Path(out_dir)
    csv_path = out / CSV_NAME
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out}: folder is not empty; choose a new folder or pass overwrite=True")
        for name in names:
            shutil.rmtree(out / name, ignore_errors=True)
        csv_path.unlink(missing_ok=True)

    rows: list[dict[str, str]] = []
    cases: Counter[str] = Counter()
    eyes_written = 0
    for index in range(n_patients):
        patient_class = names[index % len(names)]
        cases[patient_class] += 1
        case = cases[patient_class]
        rng = np.random.default_rng(derive_seed(seed, "synthetic-oct", patient_class, case))
        two = rng.random() < two_eye_fraction
        eyes = ["OD", "OS"] if two else [str(rng.choice(["OD", "OS"]))]
        first = sample_anatomy(rng, width, height, eyes[0], anatomy_variation, noise)
        anatomies = [first] + ([_fellow_eye(rng, first)] if two else [])
        for eye, anatomy in zip(eyes, anatomies):
            eyes_written += 1
            n_scans = int(rng.integers(scans_per_eye[0], scans_per_eye[1] + 1))
            plan = _scan_plan(rng, patient_class, names, n_scans, normal_fraction, secondary_fraction)
            folder = out / patient_class / str(case) / eye
            folder.mkdir(parents=True, exist_ok=True)
            for number, (position, label, lesions) in enumerate(plan, start=1):
                image_rng = np.random.default_rng(derive_seed(seed, "bscan", patient_class, case, eye, number))
                strength = lesion_strength * (0.6 + 0.4 * float(np.exp(-(position / 0.5) ** 2)))
                image = render_bscan(image_rng, anatomy, position, lesions, strength)
                ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
                if not ok:
                    raise RuntimeError(f"OpenCV could not encode a {image.shape} JPEG")
                name = f"{number:03d}_{_file_label(label)}.jpg"
                (folder / name).write_bytes(encoded.tobytes())
                rows.append({"Patient ID": str(case), "Class": patient_class, "Label": label,
                             "Directory": f"{patient_class}/{case}/{eye}/{name}", "Eye": eye})

    header = ["Patient ID", "Class", "Label", "Directory", "Eye"]
    lines = [",".join(header)] + [",".join(row[h] for h in header) for row in rows]
    atomic_write_text(csv_path, "\n".join(lines) + "\n")
    labels = Counter(row["Label"] for row in rows)
    return SynthSummary(root=out, csv_path=csv_path, classes=names, n_patients=n_patients, n_eyes=eyes_written,
                        n_images=len(rows), images_per_label={c: labels.get(c, 0) for c in names},
                        patients_per_class={c: cases.get(c, 0) for c in names},
                        worst_case_images=sum(row["Label"] == row["Class"] for row in rows), rows=rows)
