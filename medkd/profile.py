"""Model sizes and measured latency of the run's architectures (``model_profile.json``)."""

from __future__ import annotations

from kdcore.experiment import profile_models as profile_architectures
from kdcore.rundir import RunDir

from .config import OCTRecipe
from .fold_training import build_classifier, model_meta

__all__ = ["profile_models"]


def profile_models(run: RunDir, recipe: OCTRecipe, classes: list[str]) -> dict:
    roles = ["teacher", "student"] + (["baseline"] if recipe.baseline.enabled else [])
    builders = {role: (lambda role=role: build_classifier(model_meta(recipe, role, classes, -1, ""))) for role in roles}
    size = recipe.data.image_size
    return profile_architectures(run, builders, (1, size, size), recipe.report.latency_runs)
