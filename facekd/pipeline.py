"""Fard & Mahoor's pipeline: Tough and Tolerant teachers, a KD-Loss student and an L2 baseline per fold."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from kdcore.device import resolve_device
from kdcore.engine import init_from_env, is_main_process
from kdcore.engine.distributed import world_size
from kdcore.experiment import (check_per_rank_batch, finish_run, manifest_for_run, open_run, profile_models,
                               undo_new_folder_on_error)
from kdcore.logs import get_logger
from kdcore.models import check_model_choice
from kdcore.rundir import RunDir
from kdcore.runner import FoldRunner, ModelSpec
from kdcore.seeding import seed_everything

from .config import FaceRecipe
from .data_prep import build_manifest, prepare_faces, write_dataset_index
from .fold_training import build_regressor, model_meta, role_config, train_role

__all__ = ["run_pipeline"]
log = get_logger(__name__)


def run_pipeline(recipe: FaceRecipe, out: str | Path, folds: Sequence[int] | None = None,
                 resume: bool = True, build_report: bool = True) -> RunDir:
    started = time.perf_counter()
    seed_everything(recipe.seed, deterministic=recipe.runtime.deterministic)
    init_from_env(resolve_device(recipe.runtime.device))
    for role in ("tough", "tolerant", "student"):
        cfg = role_config(recipe, role)
        check_model_choice(cfg.model, cfg.weights, key=role, pretrained=cfg.pretrained)
        check_per_rank_batch(cfg.train.batch_size, world_size(), f"{role}.train.batch_size")

    def spec(role: str, requires: tuple[str, ...] = ()) -> ModelSpec:
        return ModelSpec(role, lambda ctx: train_role(role, recipe, records, ctx), requires)

    with undo_new_folder_on_error(out):
        run = open_run(recipe, out)
        records, root = prepare_faces(recipe, run)
        manifest = manifest_for_run(run, build_manifest(recipe, records))
        if is_main_process():
            write_dataset_index(run, records, root)
        specs = [spec("tough"), spec("tolerant"), spec("student", ("tough", "tolerant"))]
        if recipe.baseline.enabled:
            specs.append(spec("baseline"))
        runner = FoldRunner(run, manifest, specs)
        runner.run_folds(folds, resume=resume)
    if not is_main_process():
        return run

    n_points = records[0].n_points
    builders = {s.name: (lambda role=s.name: build_regressor(model_meta(recipe, role, n_points, -1, "")))
                for s in specs}
    size = recipe.data.image_size
    profile_models(run, builders, (3, size, size), recipe.report.latency_runs)
    from .report import build_report as write_report

    finish_run(run, runner, "facekd", write_report if build_report else None, recipe.report.bootstrap, recipe.seed)
    log.info("run finished in %.1f s: %s", time.perf_counter() - started, run.path)
    return run
