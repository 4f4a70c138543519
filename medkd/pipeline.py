"""The KD-OCT pipeline: data and integrity gate, one patient-level fold manifest, then teacher -> student and
baseline per fold, and the clinical report. The skeleton is kdcore's (:mod:`kdcore.vertical`); what is OCT's is
:mod:`medkd.vertical`.

Example:
    >>> from kdcore.config import load_recipe                          # doctest: +SKIP
    >>> recipe = load_recipe(OCTRecipe, "pipelines/kd_oct_demo.yaml")  # doctest: +SKIP
    >>> run_pipeline(recipe, "runs/demo")                              # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from kdcore import vertical
from kdcore.run_folder import RunDir

from .config import OCTRecipe
from .vertical import OCT

__all__ = ["run_pipeline"]


def run_pipeline(recipe: OCTRecipe, out: str | Path, folds: Sequence[int] | None = None,
                 resume: bool = True, build_report: bool = True) -> RunDir:
    """Train teacher, student and baseline on each requested fold, then write the report when all are done."""
    return vertical.run_pipeline(OCT, recipe, out, folds=folds, resume=resume, build_report=build_report)
