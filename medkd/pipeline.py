"""The KD-OCT pipeline: data and integrity gate, one fold manifest, teacher -> student and baseline per fold.

Example:
    >>> from kdcore.config import load_recipe                       # doctest: +SKIP
    >>> recipe = load_recipe(OCTRecipe, "pipelines/kd_oct_demo.yaml")  # doctest: +SKIP
    >>> run_pipeline(recipe, "runs/demo")                           # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from kdcore.cv import FoldManifest, make_fold_manifest, rename_groups
from kdcore.device import resolve_device
from kdcore.engine import init_from_env, is_main_process
from kdcore.errors import DataError
from kdcore.engine.distributed import world_size
from kdcore.experiment import check_per_rank_batch, finish_run, manifest_for_run, open_run, undo_new_folder_on_error
from kdcore.logs import get_logger
from kdcore.models import check_model_choice
from kdcore.rundir import RunDir
from kdcore.runner import FoldRunner, ModelSpec
from kdcore.seeding import seed_everything

from .config import OCTRecipe
from .data import OCTDataset
from .data_prep import prepare_dataset, write_dataset_index
from .fold_training import role_config, train_role
from .profile import profile_models

__all__ = ["run_pipeline", "build_manifest"]
log = get_logger(__name__)


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


def run_pipeline(recipe: OCTRecipe, out: str | Path, folds: Sequence[int] | None = None,
                 resume: bool = True, build_report: bool = True) -> RunDir:
    """Train teacher, student and baseline on each requested fold, then write the report when all are done."""
    started = time.perf_counter()
    seed_everything(recipe.seed, deterministic=recipe.runtime.deterministic)
    init_from_env(resolve_device(recipe.runtime.device))
    for role in ("teacher", "student"):
        cfg = role_config(recipe, role)
        check_model_choice(cfg.model, cfg.weights, key=role, pretrained=cfg.pretrained)
        check_per_rank_batch(cfg.train.batch_size, world_size(), f"{role}.train.batch_size")
    with undo_new_folder_on_error(out):
        run = open_run(recipe, out)
        dataset = prepare_dataset(recipe, run)
        manifest = manifest_for_run(run, build_manifest(recipe, dataset))
        if is_main_process():
            write_dataset_index(run, dataset)

        specs = [ModelSpec("teacher", lambda ctx: train_role("teacher", recipe, dataset, ctx))]
        specs.append(ModelSpec("student", lambda ctx: train_role("student", recipe, dataset, ctx),
                               requires=("teacher",)))
        if recipe.baseline.enabled:
            specs.append(ModelSpec("baseline", lambda ctx: train_role("baseline", recipe, dataset, ctx)))
        runner = FoldRunner(run, manifest, specs)
        runner.run_folds(folds, resume=resume)
    if not is_main_process():
        return run

    profile_models(run, recipe, dataset.classes)
    from .report import build_report as write_report

    finish_run(run, runner, "medkd", write_report if build_report else None, recipe.report.bootstrap, recipe.seed)
    log.info("run finished in %.1f s: %s", time.perf_counter() - started, run.path)
    return run
