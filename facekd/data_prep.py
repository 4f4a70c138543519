"""From a recipe to the checked faces a run trains on: synthetic generation, integrity gate, splits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from kdcore.cv import FoldManifest, FoldSplit, inner_validation_split, make_fold_manifest
from kdcore.engine import is_main_process
from kdcore.errors import DataError
from kdcore.run_setup import resolve_data_root
from kdcore.logs import get_logger
from kdcore.run_folder import RunDir

from .config import FaceRecipe
from .formats import FaceRecord

__all__ = ["resolve_data", "prepare_faces", "build_manifest", "write_dataset_index", "subset_tags", "DEFAULT_OFFICIAL"]
log = get_logger(__name__)

# Official protocols: the training split, and the test splits reported (each becomes a report subset).
DEFAULT_OFFICIAL = {"300w": ("train", ["common", "challenging"]), "wflw": ("train", ["test"]),
                    "cofw": ("train", ["test"])}


def resolve_data(recipe: FaceRecipe, run_path: Path | None) -> tuple[Path, str]:
    """Data root and on-disk format; synthetic faces are generated first when they do not exist yet."""
    synth = recipe.data.synthetic

    def write_synthetic(root: Path) -> None:
        from .synth import is_synthetic_output, write_synthetic_faces

        if is_synthetic_output(root) and (root / "subjects.csv").exists():
            return
        log.info("writing %d synthetic faces to %s", synth.faces, root)
        write_synthetic_faces(root, synth.faces, seed=synth.seed, image_size=tuple(synth.image_size),
                              subjects=synth.subjects)

    return resolve_data_root(recipe.data, run_path, write_synthetic, "folder")


def prepare_faces(recipe: FaceRecipe, run: RunDir) -> tuple[list[FaceRecord], Path]:
    """Audit the faces (integrity gate), write ``audit.json``, return the faces the run may use and the data root."""
    from .audit import audit_faces, integrity_gate

    root, fmt = resolve_data(recipe, run.path)
    report = audit_faces(root, fmt)
    excluded = set(integrity_gate(report, exclude=recipe.data.on_bad_image == "exclude"))
    if is_main_process():
        run.write_json("audit.json", {**report.to_dict(), "excluded": sorted(excluded),
                                      "on_bad_image": recipe.data.on_bad_image})
    records = [r for r in report.records if r.record_id not in excluded]
    if excluded:
        log.warning("leaving out %d face(s) as the recipe allows (listed in audit.json)", len(excluded))
    counts = Counter(r.n_points for r in records)
    if len(counts) != 1:
        raise DataError(f"{root}: faces with different point counts {dict(counts)}; one scheme per run")
    log.info("data: %d faces, %d subjects, %d points", len(records), len({r.subject for r in records}),
             next(iter(counts)))
    return records, root


def subset_tags(record: FaceRecord) -> str:
    """The report subsets a face belongs to: its split plus WFLW's attribute subsets, ';'-separated."""
    tags = [record.subset] if record.subset else []
    tags += sorted(name for name, flag in record.attributes.items() if flag)
    return ";".join(tags)


def build_manifest(recipe: FaceRecipe, records: list[FaceRecord]) -> FoldManifest:
    seed = recipe.cv.seed if recipe.cv.seed is not None else recipe.seed
    subjects = [r.subject for r in records]
    if recipe.data.evaluation == "cv":
        return make_fold_manifest(subjects, None, recipe.cv.folds, recipe.cv.val_fraction, seed, group_name="subject")
    default_train, default_tests = DEFAULT_OFFICIAL[recipe.data.format]
    train_split = recipe.data.train_split or default_train
    test_splits = set(recipe.data.test_splits or default_tests)
    train = [r for r in records if r.subset == train_split]
    test = [r for r in records if r.subset in test_splits]
    if not train or not test:
        raise DataError(f"{recipe.data.root}: official protocol needs faces in split {train_split!r} and in the "
                        f"test splits {sorted(test_splits)} (found {len(train)} and {len(test)})")
    train_subjects, val_list = inner_validation_split([r.subject for r in train], None, recipe.cv.val_fraction, seed,
                                                      group_name="subject")
    val = set(val_list)
    test_subjects = sorted({r.subject for r in test})
    split = FoldSplit(0, train_subjects, sorted(val), test_subjects,
                      {"train": {"all": sum(r.subject in set(train_subjects) for r in train)},
                       "val": {"all": sum(r.subject in val for r in train)}, "test": {"all": len(test)}},
                      val_share=round(len(val) / (len(val) + len(train_subjects)), 6))
    manifest = FoldManifest([split], seed, 1, recipe.cv.val_fraction, "subject", len(records),
                            len(set(subjects)), [])
    manifest.validate()
    return manifest


def write_dataset_index(run: RunDir, records: list[FaceRecord], root: Path) -> None:
    items = []
    for r in records:
        try:
            relative = str(Path(r.image_path).resolve().relative_to(root.resolve()))
        except ValueError:
            relative = Path(r.image_path).name
        items.append({"id": r.record_id, "path": relative, "subject": r.subject, "subset": subset_tags(r),
                      "image_index": r.image_index})
    run.write_json("dataset.json", {"n_points": records[0].n_points, "items": items})
