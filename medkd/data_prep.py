"""From a recipe to the checked dataset a run trains on: synthetic generation, loading, integrity gate."""

from __future__ import annotations

from pathlib import Path

from kdcore.engine import is_main_process
from kdcore.experiment import resolve_data_root
from kdcore.logs import get_logger
from kdcore.rundir import RunDir

from .config import OCTRecipe
from .data import OCTDataset, load_oct_dataset
from .privacy import patient_hasher, pseudonymise

__all__ = ["resolve_data", "prepare_dataset", "write_dataset_index", "volume_options"]
log = get_logger(__name__)


def resolve_data(recipe: OCTRecipe, run_path: Path | None) -> tuple[Path, str]:
    """Data root and on-disk format; a synthetic dataset is generated first when it does not exist yet."""
    synth = recipe.data.synthetic

    def write_synthetic(root: Path) -> None:
        if (root / "data_information.csv").exists():
            return
        from .synth import write_synthetic_oct

        log.info("writing a synthetic NEH-layout dataset (%d patients) to %s", synth.patients, root)
        write_synthetic_oct(root, n_patients=synth.patients, seed=synth.seed, image_size=tuple(synth.image_size),
                            scans_per_eye=tuple(synth.scans_per_eye), lesion_strength=synth.lesion_strength,
                            noise=synth.noise)

    return resolve_data_root(recipe.data, run_path, write_synthetic, "neh")


def volume_options(recipe: OCTRecipe, patient_key=None):
    """The recipe's ``data.bscans`` / ``data.labels`` for a volume folder; ``patient_key`` hashes patient ids."""
    from .data.volume_scan import VolumeOptions

    return VolumeOptions(selection=recipe.data.bscans, labels=recipe.data.labels, patient_key=patient_key)


def prepare_dataset(recipe: OCTRecipe, run: RunDir) -> OCTDataset:
    """Audit the data (the integrity gate), write ``audit.json``, and load what the run may use."""
    from .audit import audit_oct, integrity_gate

    root, fmt = resolve_data(recipe, run.path)
    subset = recipe.data.subset if fmt == "neh" else None
    mode = "official" if recipe.data.evaluation == "official_test" else "cv"
    hash_ids = recipe.privacy.hash_patient_ids
    if hash_ids is None:
        hash_ids = fmt in ("neh", "volumes") and recipe.data.format != "synthetic"
    hashed = patient_hasher(run.path, recipe.privacy.salt) if hash_ids else None
    # Volume files carry real patient ids: they are hashed while scanning, so no finding or log ever holds one.
    volumes = volume_options(recipe, hashed) if fmt == "volumes" else None
    report = audit_oct(root, fmt, subset=subset or "all", near_duplicates=recipe.data.near_duplicates, mode=mode,
                       n_folds=recipe.cv.folds if mode == "cv" else None, classes=recipe.data.classes if volumes
                       else None, volumes=volumes)
    excluded = integrity_gate(report, exclude=recipe.data.on_bad_image == "exclude")
    if is_main_process():
        summary = report.to_dict()
        if hashed is not None and volumes is None:
            summary["patients"] = [{**p, "patient": hashed(p["patient"])} for p in summary.get("patients", [])]
        run.write_json("audit.json", {**summary, "excluded": sorted(excluded),
                                      "on_bad_image": recipe.data.on_bad_image})
    dataset = load_oct_dataset(root, fmt, subset=subset, classes=recipe.data.classes, volumes=volumes)
    if excluded:
        log.warning("leaving out %d unreadable image(s) as the recipe allows (listed in audit.json)", len(excluded))
        dataset = dataset.without(excluded, reason="excluded by the integrity gate")
    for note in dataset.notes:
        log.info("data: %s", note)
    if hashed is not None and volumes is None:
        dataset = pseudonymise(dataset, hashed)
    log.info("data: %d images, %d patients, classes %s", len(dataset), len(set(dataset.patients)),
             dataset.class_counts())
    return dataset


def write_dataset_index(run: RunDir, dataset: OCTDataset) -> None:
    """``dataset.json``: every item of the run with its path relative to the data root (the run folder's own
    record, for export parity checks; reports and predictions use the ids only)."""
    root = Path(dataset.root).resolve()
    items = [{"id": r.image_id, "path": Path(r.path).resolve().relative_to(root).as_posix(), "label": r.label,
              "patient": r.patient, "eye": r.eye, "official_split": r.official_split,
              **({"frame": r.frame, "visit": r.visit} if r.frame is not None else {})} for r in dataset.records]
    run.write_json("dataset.json", {"format": dataset.format, "classes": dataset.classes, **dataset.meta,
                                    "items": items})
