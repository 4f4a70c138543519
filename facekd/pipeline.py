"""Fard & Mahoor's pipeline: Tough and Tolerant teachers, a KD-Loss student and an L2 baseline per fold, then the
landmark report. The skeleton is kdcore's (:mod:`kdcore.vertical`); what is face-specific is
:mod:`facekd.vertical`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from kdcore import vertical
from kdcore.run_folder import RunDir

from .config import FaceRecipe
from .vertical import FACES

__all__ = ["run_pipeline"]


def run_pipeline(recipe: FaceRecipe, out: str | Path, folds: Sequence[int] | None = None,
                 resume: bool = True, build_report: bool = True) -> RunDir:
    """Train both teachers, the student and the baseline on each requested fold, then report."""
    return vertical.run_pipeline(FACES, recipe, out, folds=folds, resume=resume, build_report=build_report)
