"""Fold runner: trains a list of named models per fold in dependency order, on one shared manifest.

Where each model's files go and what "finished" means is :class:`~kdcore.run_folder.RunDir`'s. A finished model
is skipped, so a killed run resumes where it stopped and folds can run as separate jobs (``--folds 0,1`` here,
``--folds 2,3,4`` elsewhere) and be merged afterwards.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .cv import FoldManifest, FoldSplit, load_manifest
from .engine.distributed import barrier, is_main_process
from .errors import ConfigError, DataError
from .logs import get_logger
from .predictions import read_predictions, write_predictions
from .run_folder import RunDir

__all__ = ["ModelSpec", "FoldContext", "FoldOutput", "FoldRunner", "merge_runs", "parse_folds"]
log = get_logger(__name__)


@dataclass
class FoldContext:
    fold: int
    split: FoldSplit
    manifest: FoldManifest
    model_dir: Path
    dependencies: dict[str, Path]
    run: RunDir
    resume: bool = True
    # A sweep trial scores the model on the fold's inner-validation part and never sees its test part, and
    # reports each epoch to its pruner.
    evaluate: str = "test"
    on_epoch: Callable[[dict[str, Any]], None] | None = None


@dataclass
class FoldOutput:
    predictions: list[dict[str, Any]]
    columns: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    # Models trained together with this one (online distillation): their weights are written by the training
    # function, their predictions and done.json by the runner, right after this model's.
    companions: dict[str, "FoldOutput"] = field(default_factory=dict)


@dataclass
class ModelSpec:
    """A model trained per fold; ``requires`` names models of the same fold it needs (its teachers);
    ``trained_with`` names the model whose training also produces this one (never trained on its own)."""

    name: str
    train: Callable[[FoldContext], FoldOutput]
    requires: tuple[str, ...] = ()
    trained_with: str | None = None


def parse_folds(text: str | None, n_folds: int) -> list[int]:
    """``"0,2"`` or ``"1-3"`` -> fold list; None -> all folds."""
    if text is None:
        return list(range(n_folds))
    folds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            lo, hi = (int(x) for x in part.split("-", 1)) if "-" in part.lstrip("-") else (int(part), int(part))
        except ValueError:
            raise ConfigError(f"--folds {text!r}: expected fold numbers like 0,1 or 2-4") from None
        if hi < lo:  # an empty range would train nothing and still exit 0
            raise ConfigError(f"--folds {text!r}: range {part!r} is empty (write it low-high, e.g. 0-1)")
        folds.extend(range(lo, hi + 1))
    if not folds:
        raise ConfigError(f"--folds {text!r}: no fold given")
    bad = [k for k in folds if not 0 <= k < n_folds]
    if bad:
        raise ConfigError(f"--folds {text!r}: folds {bad} outside 0..{n_folds - 1}")
    return sorted(set(folds))


class FoldRunner:
    def __init__(self, run: RunDir, manifest: FoldManifest, specs: Sequence[ModelSpec], evaluate: str = "test"):
        self.run, self.manifest, self.evaluate = run, manifest, evaluate
        self.specs = self._ordered(specs)

    @staticmethod
    def _ordered(specs: Sequence[ModelSpec]) -> list[ModelSpec]:
        by_name = {s.name: s for s in specs}
        if len(by_name) != len(specs):
            raise ConfigError(f"duplicate model names: {[s.name for s in specs]}")
        ordered: list[ModelSpec] = []
        visiting: set[str] = set()

        def visit(spec: ModelSpec) -> None:
            if spec in ordered:
                return
            if spec.name in visiting:
                raise ConfigError(f"models depend on each other in a cycle through {spec.name!r}")
            visiting.add(spec.name)
            for dependency in spec.requires:
                if dependency not in by_name:
                    raise ConfigError(f"model {spec.name!r} requires {dependency!r}, which the recipe does not define")
                visit(by_name[dependency])
            visiting.discard(spec.name)
            ordered.append(spec)

        for spec in specs:
            if spec.trained_with is not None and spec.trained_with not in by_name:
                raise ConfigError(f"model {spec.name!r} is trained with {spec.trained_with!r}, which the recipe "
                                  "does not define")
            visit(spec)
        return ordered

    def model_dir(self, name: str, fold: int) -> Path:
        return self.run.model_dir(name, fold)

    def is_done(self, name: str, fold: int) -> bool:
        return self.run.is_finished(name, fold, self.manifest.sha)

    def run_folds(self, folds: Sequence[int] | None = None, resume: bool = True) -> None:
        for fold in folds if folds is not None else range(self.manifest.n_folds):
            split = self.manifest.fold(fold)
            for spec in self.specs:
                if self.is_done(spec.name, fold):
                    log.info("fold %d %s: already complete, skipped", fold, spec.name)
                    continue
                if spec.trained_with is not None:
                    self._check_companion(spec, fold)
                    continue  # written with its partner's training
                dependencies = {}
                for dependency in spec.requires:
                    if not self.is_done(dependency, fold):
                        raise DataError(f"fold {fold}: {spec.name} needs {dependency}, which is not complete")
                    dependencies[dependency] = self.model_dir(dependency, fold)
                model_dir = self.model_dir(spec.name, fold)
                model_dir.mkdir(parents=True, exist_ok=True)
                context = FoldContext(fold, split, self.manifest, model_dir, dependencies, self.run, resume,
                                      evaluate=self.evaluate)
                log.info("fold %d %s: training on %d train / %d val %ss, testing on %d", fold, spec.name,
                         len(split.train), len(split.val), self.manifest.group_name, len(split.test))
                output = spec.train(context)
                if is_main_process():
                    # Companions first: the partner's done.json, written last, vouches for both.
                    for name, companion in output.companions.items():
                        self._finish(name, fold, companion)
                    self._finish(spec.name, fold, output)
                barrier()  # models of this fold that depend on this one read its files on every rank

    def _check_companion(self, spec: ModelSpec, fold: int) -> None:
        partner = spec.trained_with
        if self.is_done(partner, fold):
            raise DataError(f"fold {fold}: {spec.name} is trained together with {partner}, whose folder is complete "
                            f"while {spec.name}'s is not; delete {self.model_dir(partner, fold)} to train both again")

    def _finish(self, name: str, fold: int, output: FoldOutput) -> None:
        model_dir = self.model_dir(name, fold)
        write_predictions(model_dir / "predictions.csv", output.predictions, output.columns)
        # The report checks the file against this record: a truncated copy is refused, not scored.
        written = {"rows": len(output.predictions),
                   "sha256": hashlib.sha256((model_dir / "predictions.csv").read_bytes()).hexdigest()}
        self.run.finish_model(name, fold, {"model": name, "fold": fold, "manifest": self.manifest.sha,
                                           **output.info, "predictions": written})

    def completed_folds(self, name: str) -> list[int]:
        return [k for k in range(self.manifest.n_folds) if self.is_done(name, k)]

    def missing_folds(self) -> dict[str, list[int]]:
        """Models with folds not complete yet (e.g. run as separate jobs), and those folds."""
        coverage = self.run.coverage([spec.name for spec in self.specs], range(self.manifest.n_folds))
        return {name: entry["missing"] for name, entry in coverage.partial.items()}

    def predictions(self, name: str) -> list[dict[str, str]]:
        """Out-of-fold predictions of ``name`` over every completed fold."""
        rows: list[dict[str, str]] = []
        for fold in self.completed_folds(name):
            rows.extend(read_predictions(self.model_dir(name, fold) / "predictions.csv"))
        return rows


def merge_runs(target: str | Path, sources: Sequence[str | Path]) -> list[str]:
    """Copy completed folds of ``sources`` into ``target`` after checking they share its manifest."""
    target_run = RunDir(target)
    manifest = load_manifest(target_run.path / "folds.json")
    folds = [split.fold for split in manifest.folds]
    copied = []
    for source in map(Path, sources):
        other = load_manifest(source / "folds.json")
        if other.sha != manifest.sha:
            raise DataError(f"{source}: fold manifest {other.sha} differs from {target}'s {manifest.sha}; "
                            "only runs of the same recipe and data can be merged")
        source_run = RunDir(source)
        finished, _ = source_run.models_on_disk(folds, manifest.sha)
        for fold, name in sorted((fold, name) for name, done in finished.items() for fold in done):
            if target_run.is_finished(name, fold):
                continue
            relative = source_run.model_dir(name, fold).relative_to(source)
            destination = target_run.model_dir(name, fold)
            # Copy beside the destination, then rename: an interrupted merge leaves no half-copied fold.
            staging = destination.with_name(destination.name + ".merging")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(source_run.model_dir(name, fold), staging, ignore=shutil.ignore_patterns("last.pt"))
            shutil.rmtree(destination, ignore_errors=True)
            staging.rename(destination)
            copied.append(str(relative))
    return copied
