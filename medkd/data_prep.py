"""From a recipe to the checked dataset a run trains on: synthetic generation, loading, integrity gate."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from kdcore.cv import FoldManifest, make_fold_manifest, rename_groups
from kdcore.engine import is_main_process
from kdcore.errors import DataError
from kdcore.run_setup import resolve_data_root
from kdcore.logs import add_log_redaction, get_logger
from kdcore.run_folder import RunDir

from .config import OCTRecipe
from .data import OCTDataset, load_oct_dataset
from .privacy import Redactor, hash_ids_enabled, patient_hasher, privacy_key, pseudonymise

__all__ = ["resolve_data", "prepare_dataset", "build_manifest", "write_dataset_index", "volume_options", "item_files"]
log = get_logger(__name__)


def resolve_data(recipe: OCTRecipe, run_path: Path | None) -> tuple[Path, str]:
    """Data root and on-disk format; a synthetic dataset is generated first when it does not exist yet."""
    synth = recipe.data.synthetic

    def write_synthetic(root: Path) -> None:
        if (root / "data_information.csv").exists():
            return
        from .synth import write_synthetic_oct

        log.info("writing a synthetic NEH-layout dataset (%d patients) to %s", synth.patients, root)
        # The CSV is written last: without it, the run's own data folder is what a killed run left half-written.
        own = run_path is not None and root == run_path / "data"
        write_synthetic_oct(root, n_patients=synth.patients, seed=synth.seed, image_size=tuple(synth.image_size),
                            scans_per_eye=tuple(synth.scans_per_eye), lesion_strength=synth.lesion_strength,
                            noise=synth.noise, overwrite=own)

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
    hashed = None
    if hash_ids_enabled(recipe, fmt):
        hashed = patient_hasher(privacy_key(recipe.privacy.salt, root, run.path))
    # Volume files carry real patient ids: they are hashed while scanning, so no finding or log ever holds one.
    volumes = volume_options(recipe, hashed) if fmt == "volumes" else None
    report = audit_oct(root, fmt, subset=subset or "all", near_duplicates=recipe.data.near_duplicates, mode=mode,
                       n_folds=recipe.cv.folds if mode == "cv" else None,
                       classes=recipe.data.classes if volumes else None, volumes=volumes)
    excluded = integrity_gate(report, exclude=recipe.data.on_bad_image == "exclude")
    dataset = load_oct_dataset(root, fmt, subset=subset, classes=recipe.data.classes, volumes=volumes)
    present = [c for c, n in dataset.class_counts().items() if n]
    if len(present) < 2:
        raise DataError(f"{root}: images of {len(present)} class(es) only ({', '.join(present) or 'none'}) with "
                        f"data.classes {dataset.classes}; a classifier needs at least two")
    if hashed is not None and volumes is None:
        # The whole loaded dataset is hashed before exclusion, so excluded images get pseudonymous ids too.
        dataset = pseudonymise(dataset, hashed)
    redact = Redactor.for_dataset(dataset, root)
    add_log_redaction(redact)
    excluded = sorted(redact(image_id) for image_id in excluded)
    if is_main_process():
        run.write_json("audit.json", redact.json({**report.to_dict(), "excluded": excluded,
                                                 "on_bad_image": recipe.data.on_bad_image}))
    if excluded:
        log.warning("leaving out %d unreadable image(s) as the recipe allows (listed in audit.json)", len(excluded))
        dataset = dataset.without(excluded, reason="excluded by the integrity gate")
    for note in dataset.notes:
        log.info("data: %s", note)
    log.info("data: %d images, %d patients, classes %s", len(dataset), len(set(dataset.patients)),
             dataset.class_counts())
    return dataset


def build_manifest(recipe: OCTRecipe, dataset: OCTDataset) -> FoldManifest:
    """Patient-level folds (or OCT2017's official split) for every model of the run.

    With pseudonymous ids the split is made on the raw patient keys and renamed afterwards: the folds depend
    on the data and the seed, never on the hashing key.
    """
    rename = {r.raw_patient: r.patient for r in dataset.records if r.raw_patient is not None}
    if rename:
        raw = replace(dataset, records=[replace(r, patient=r.raw_patient) for r in dataset.records])
        return rename_groups(_build_manifest(recipe, raw), rename)
    return _build_manifest(recipe, dataset)


def _build_manifest(recipe: OCTRecipe, dataset: OCTDataset) -> FoldManifest:
    seed = recipe.cv.seed if recipe.cv.seed is not None else recipe.seed
    if recipe.data.evaluation == "official_test":
        from .official import official_manifest

        return official_manifest(dataset, recipe.cv.val_fraction, seed)
    # Stratify by the patient's class where the format has one (NEH), else by the image label.
    strata = [r.patient_class or r.label for r in dataset.records]
    manifest = make_fold_manifest(dataset.patients, strata, recipe.cv.folds, recipe.cv.val_fraction, seed)
    _check_training_classes(manifest, dataset)
    return manifest


def _check_training_classes(manifest: FoldManifest, dataset: OCTDataset) -> None:
    """Every fold must train on every class, or its teacher and students could never predict the missing one."""
    for split in manifest.folds:
        train = set(split.train)
        present = {r.label for r in dataset.records if r.patient in train}
        missing = [c for c in dataset.classes if c not in present]
        if missing:
            raise DataError(f"fold {split.fold}: no training images of class(es) {missing} once the inner "
                            f"validation patients are held out; use fewer folds (cv.folds) or a smaller "
                            f"cv.val_fraction, or add patients")


def write_dataset_index(run: RunDir, dataset: OCTDataset) -> None:
    """``dataset.json``: every item of the run with its path relative to the data root (the run folder's own
    record, for export parity checks; reports and predictions use the ids only). Pseudonymised items have no
    path: :func:`item_paths` finds their files again from the data and the key."""
    root = Path(dataset.root).resolve()
    items = []
    for r in dataset.records:
        item = {"id": r.image_id, "label": r.label, "patient": r.patient, "eye": r.eye,
                "official_split": r.official_split, **({"frame": r.frame, "visit": r.visit} if r.frame is not None
                                                       else {})}
        if r.raw_id is None:  # a pseudonymised item's path would name the patient again
            item["path"] = Path(r.path).resolve().relative_to(root).as_posix()
        items.append(item)
    run.write_json("dataset.json", {"format": dataset.format, "classes": dataset.classes, **dataset.meta,
                                    "items": items})


def item_files(run_dir: Path, root: Path) -> dict[str, Path]:
    """``id -> file`` for a run whose ``dataset.json`` has pseudonymous ids (and so no paths): the data is
    indexed again as the run's ``config.yaml`` says and hashed with the same key. {} when that fails."""
    from kdcore.errors import KDError
    from kdcore.export.run_models import read_run_file

    config = read_run_file(run_dir, "config.yaml") or {}
    data = config.get("data") or {}
    salt = (config.get("privacy") or {}).get("salt")
    fmt = "neh" if data.get("format") == "synthetic" else data.get("format")
    try:
        dataset = load_oct_dataset(root, fmt, subset=data.get("subset") if fmt == "neh" else None,
                                   classes=data.get("classes"))
        dataset = pseudonymise(dataset, patient_hasher(privacy_key(salt, root, Path(run_dir))))
    except (KDError, OSError, TypeError, AttributeError):
        return {}
    return {r.image_id: Path(r.path) for r in dataset.records}
