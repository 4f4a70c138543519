"""The vertical template: kdcore runs the pipeline and trains every role on every fold; a vertical declares.

A vertical (medkd, facekd, the toy one in tests/kdcore/test_toy_vertical.py) subclasses :class:`Vertical` and fills
its hooks: the roles and their order, how to read its data and split it into folds, its model metadata, the
datasets of a fold, its task (loss, validation metrics, monitor) and its prediction rows. :func:`run_pipeline`
and :func:`train_role` are written once, here, in the manner of scikit-learn's template methods.

Example (the outline of a vertical; see the toy test for a complete one):
    >>> class Toy(Vertical):                                    # doctest: +SKIP
    ...     name, group_name = "toykd", "subject"
    ...     def roles(self, recipe):
    ...         return [Role("teacher", "teacher"), Role("student", "student", requires=("teacher",))]
    ...     ...
    >>> run_pipeline(Toy(), recipe, "runs/toy")                 # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .atomic import atomic_open
from .checkpoint import save_weights
from .cv import FoldManifest
from .device import autocast_dtype, resolve_device
from .engine import Trainer, init_from_env, is_main_process
from .engine.distributed import world_size
from .errors import ConfigError
from .loaders import check_per_rank_batch, eval_loader, sampler_seed, train_loader
from .run_setup import finish_run, manifest_for_run, open_run, profile_models, undo_new_folder_on_error
from .logs import TensorBoardLogger, get_logger
from .models import ModelMeta, build_model, check_model_choice
from .online import OnlinePair, unwrap_pair
from .run_folder import CLASS_MEANS_FILE, RunDir
from .fold_runner import FoldContext, FoldOutput, FoldRunner, ModelSpec
from .seeding import derive_seed, seed_everything
from .teacher import FrozenTeacher
from .teacher_cache import cached_teacher

__all__ = ["Role", "FoldSets", "Vertical", "run_pipeline", "train_role", "load_teacher", "check_models",
           "sweep_adapter"]
log = get_logger(__name__)


@dataclass(frozen=True)
class Role:
    """A model a vertical trains on every fold.

    Args:
        name: the model's name in the run folder (``folds/fold_<k>/<name>``) and in reports.
        config: the recipe section holding its model, training and augmentation settings.
        requires: the models of the same fold it distils from (they are trained first).
        kind: ``teacher``, ``student`` or ``baseline`` (what the report compares).
        trained_with: the role this one is trained together with (online distillation): never trained on its
            own; the partner's :func:`train_role` trains both and writes this role's model folder too.
    """

    name: str
    config: str
    requires: tuple[str, ...] = ()
    kind: Literal["teacher", "student", "baseline"] = "teacher"
    trained_with: str | None = None


@dataclass
class FoldSets:
    """The datasets of one role on one fold (train with the role's augmentation) and what to record about them."""

    train: Dataset
    val: Dataset
    test: Dataset
    counts: dict[str, int]
    info: dict[str, Any] = field(default_factory=dict)


class Vertical:
    """What a vertical declares; kdcore does the rest. Override the hooks that raise NotImplementedError.

    Class attributes: ``name`` (the CLI tool, e.g. ``medkd``), ``group_name`` (what folds split: ``patient``),
    ``counts_key`` (the ``done.json`` key of per-part item counts: ``images``).
    """

    name: str = "vertical"
    group_name: str = "group"
    counts_key: str = "images"
    teacher_names: tuple[str, ...] = ()   # the teachers every recipe of this vertical trains (sweeps share them)

    # ------------------------------------------------------------ roles and recipe
    def roles(self, recipe: Any) -> list[Role]:
        """The roles this recipe trains, teachers before the students that require them."""
        raise NotImplementedError

    def role_config(self, recipe: Any, role: Role) -> Any:
        """The role's section: ``model``, ``weights``, ``pretrained``, ``drop_path``, ``dropout``, ``train``."""
        return getattr(recipe, role.config)

    def n_folds(self, recipe: Any) -> int:
        return recipe.cv.folds

    # ------------------------------------------------------------ data
    def prepare_data(self, recipe: Any, run: RunDir) -> Any:
        """Read (or generate) the data behind the integrity gate; the result is passed to every other hook."""
        raise NotImplementedError

    def build_manifest(self, recipe: Any, data: Any) -> FoldManifest:
        """The fold manifest every model of the run shares."""
        raise NotImplementedError

    def write_dataset_index(self, run: RunDir, data: Any) -> None:
        """``dataset.json``: what export and reports need to find the run's items again (optional)."""

    def fold_sets(self, recipe: Any, role: Role, data: Any, ctx: FoldContext) -> FoldSets:
        """The role's train / val / test datasets on ``ctx.split`` (test: ``ctx.evaluate``'s part)."""
        raise NotImplementedError

    # ------------------------------------------------------------ models and tasks
    def model_meta(self, recipe: Any, role: Role, data: Any, fold: int, manifest_sha: str) -> ModelMeta:
        raise NotImplementedError

    def input_shape(self, recipe: Any, data: Any) -> tuple[int, ...]:
        """One input without the batch axis, e.g. ``(1, 224, 224)`` (profiling, latency)."""
        raise NotImplementedError

    def init_model(self, recipe: Any, role: Role, model: torch.nn.Module, sets: FoldSets) -> None:
        """Adjust a freshly built model before training (e.g. a regression head at the mean shape)."""

    def monitor(self, recipe: Any, role: Role) -> tuple[str, Literal["min", "max"]]:
        """The validation metric that picks the kept epoch, and its direction."""
        raise NotImplementedError

    def task(self, recipe: Any, role: Role, sets: FoldSets, val_loader: Any, device: torch.device,
             teachers: dict[str, Any]) -> Any:
        """The engine's task: ``loss(model, batch)``, ``validate(model)``, ``inputs(batch)``."""
        raise NotImplementedError

    def objective(self, recipe: Any, role: Role) -> Any:
        """The role's student objective when it has one (a :class:`~kdcore.objective.StudentObjective` or
        :class:`~kdcore.feature_term.FeatureTerm`), else None. :func:`train_role` loads the first required teacher
        with the features it asks for, binds its learned parts, computes ND's class means, taps the student and
        passes ``objective=`` and ``taps=`` to :meth:`task`."""
        return None

    def online_task(self, recipe: Any, role: Role, partner: Role, sets: FoldSets, val_loader: Any,
                    device: torch.device) -> Any:
        """The engine's task for ``role`` trained together with ``partner`` (an
        :class:`~kdcore.online.OnlinePair` of ``(partner, role)``), e.g. :class:`~kdcore.online.OnlineTask`."""
        raise NotImplementedError(f"{self.name} does not train roles together (online distillation)")

    def cache_identity(self, recipe: Any) -> dict[str, Any]:
        """What a cached teacher output depends on beyond the fold, augmentation and sampler (preprocessing)."""
        return {}

    def predict(self, recipe: Any, role: Role, model: torch.nn.Module, sets: FoldSets, loader: Any,
                ctx: FoldContext, device: torch.device, amp_dtype: torch.dtype | None) -> tuple[list[dict], list[str]]:
        """``(rows, columns)`` of ``predictions.csv`` for the fold's test part."""
        raise NotImplementedError

    # ------------------------------------------------------------ report
    def build_report(self, run_dir: str | Path, n_boot: int | None = None, seed: int = 0) -> dict:
        raise NotImplementedError

    def report_bootstrap(self, recipe: Any) -> int:
        return recipe.report.bootstrap

    def latency_runs(self, recipe: Any) -> int:
        return recipe.report.latency_runs


def load_teacher(vertical: Vertical, recipe: Any, name: str, data: Any, ctx: FoldContext,
                 amp_dtype: torch.dtype | None, device: torch.device, features: Sequence[str] = ()) -> FrozenTeacher:
    """The fold's finished teacher ``name`` (with ``features``: also those intermediate outputs, same forward
    pass); one of another fold, manifest or architecture is refused."""
    role = _role(vertical, recipe, name)
    expected = vertical.model_meta(recipe, role, data, ctx.fold, ctx.manifest.sha).identity()
    return FrozenTeacher.from_weights(ctx.dependencies[name] / "model.safetensors", build_model, expected,
                                      amp_dtype=amp_dtype, device=device, channels_last=recipe.runtime.channels_last,
                                      features=features)


def _cached_teachers(vertical: Vertical, recipe: Any, role: Role, ctx: FoldContext, teachers: dict[str, Any],
                     loader: Any, device: torch.device) -> tuple[dict[str, Any], Any]:
    """The student's teacher outputs from the fold's cache (built on first use), and the loader that matches it."""
    cfg = vertical.role_config(recipe, role)
    identity = {"manifest": ctx.manifest.sha, "fold": ctx.fold, "augment": cfg.augment.model_dump(mode="json"),
                **vertical.cache_identity(recipe), "sampler_seed": loader.sampler.seed,
                "batch_size": loader.batch_size}
    # One teacher is cached under "logits", several under their names (kdcore.teacher_cache's layout).
    single = len(teachers) == 1
    weights = {name: ctx.dependencies[name] / "model.safetensors" for name in teachers}
    cached, loader, cache = cached_teacher(
        cfg.teacher_cache, ctx.model_dir.parent, loader, next(iter(teachers.values())) if single else teachers,
        weights=next(iter(weights.values())) if single else weights, identity=identity, epochs=cfg.train.epochs,
        pool_views=cfg.teacher_cache_views, dtype=cfg.teacher_cache_dtype, device=device,
        channels_last=recipe.runtime.channels_last)
    ctx.run.log_event({"model": role.name, "fold": ctx.fold, "split": "teacher_cache", "mode": cfg.teacher_cache,
                       "build_seconds": cache.build_seconds, "lossless": cache.meta["lossless"],
                       "path": str(cache.path.relative_to(ctx.run.path))})
    return ({next(iter(teachers)): cached} if single else dict(cached)), loader


def _prepare_objective(objective: Any, model: torch.nn.Module, teacher: FrozenTeacher | None, sets: FoldSets,
                       n_classes: int, ctx: FoldContext, device: torch.device, workers: int) -> Any:
    """Bind the objective's learned parts (projector, weak classifier) from one dry pass, give ND its class means
    and tap the student; returns the taps (None for a logit-only objective, which is left untouched)."""
    if not (objective.needs_student_features or objective.needs_teacher_features):
        return None
    # Integer keys give un-augmented items: the fold's TRAINING images as they are (never val or test).
    plain = eval_loader(sets.train, 16, device, workers)
    model.to(device)
    objective.bind_models(model, teacher, next(iter(plain))["image"][:2].to(device))
    feature_loss = getattr(objective, "feature_loss", None)
    if hasattr(feature_loss, "set_class_means"):
        from .losses import class_mean_embeddings

        means = class_mean_embeddings(teacher, plain, n_classes, device, path=objective.teacher_feature_path)
        objective.set_class_means(means.to(device))
        if is_main_process():  # stored with the fold: what the student was pulled towards
            with atomic_open(ctx.model_dir / CLASS_MEANS_FILE, "wb", encoding=None) as f:
                np.save(f, means.numpy())
    return objective.tap(model)


def train_role(vertical: Vertical, role: Role, recipe: Any, data: Any, ctx: FoldContext) -> FoldOutput:
    """Train ``role`` on one fold (distilling from the fold's finished teachers it requires, or together with the
    roles ``trained_with`` it), then predict the fold's test part. Seeds derive from (recipe seed, role, fold), so
    a rerun or a resumed run repeats it."""
    cfg = vertical.role_config(recipe, role)
    runtime = recipe.runtime
    device = resolve_device(runtime.device)
    amp_dtype = autocast_dtype(device, cfg.train.amp, runtime.amp_dtype)
    sets = vertical.fold_sets(recipe, role, data, ctx)
    batch = cfg.train.batch_size
    loader = train_loader(sets.train, batch, device, runtime.workers, seed=sampler_seed(recipe.seed, role.name, ctx.fold),
                          key=f"{role.config}.train.batch_size")
    val_loader = eval_loader(sets.val, batch * 2, device, runtime.workers)
    test_loader = eval_loader(sets.test, batch * 2, device, runtime.workers)

    meta = vertical.model_meta(recipe, role, data, ctx.fold, ctx.manifest.sha)
    torch.manual_seed(derive_seed(recipe.seed, role.name, ctx.fold, "init"))
    model = build_model(meta, cfg.pretrained, cfg.weights, cfg.drop_path, cfg.dropout)
    vertical.init_model(recipe, role, model, sets)
    partners = [r for r in vertical.roles(recipe) if r.trained_with == role.name]
    trained: torch.nn.Module = model
    if partners:
        (partner,) = partners  # one network trained together with this one (OnlinePair)
        partner_meta = vertical.model_meta(recipe, partner, data, ctx.fold, ctx.manifest.sha)
        partner_cfg = vertical.role_config(recipe, partner)
        torch.manual_seed(derive_seed(recipe.seed, partner.name, ctx.fold, "init"))
        partner_model = build_model(partner_meta, partner_cfg.pretrained, partner_cfg.weights, partner_cfg.drop_path,
                                    partner_cfg.dropout)
        vertical.init_model(recipe, partner, partner_model, sets)
        trained = OnlinePair(partner_model, model)
        task = vertical.online_task(recipe, role, partner, sets, val_loader, device)
    else:
        objective = vertical.objective(recipe, role)
        feature_teacher = (role.requires[0] if role.requires and objective is not None
                           and objective.needs_teacher_features else None)
        teachers = {name: load_teacher(vertical, recipe, name, data, ctx, amp_dtype, device,
                                       features=(objective.teacher_feature_path,) if name == feature_teacher else ())
                    for name in role.requires}
        extra: dict[str, Any] = {}
        if objective is not None:
            extra = {"objective": objective, "taps": _prepare_objective(
                objective, model, teachers.get(feature_teacher), sets, meta.num_outputs, ctx, device, runtime.workers)}
        if teachers and getattr(cfg, "teacher_cache", "off") != "off":
            teachers, loader = _cached_teachers(vertical, recipe, role, ctx, teachers, loader, device)
        task = vertical.task(recipe, role, sets, val_loader, device, teachers, **extra)
    monitor, mode = vertical.monitor(recipe, role)
    tensorboard = TensorBoardLogger(ctx.run.path / "tensorboard") if runtime.tensorboard else None
    trainer = Trainer(trained, cfg.train, task, monitor=monitor, mode=mode, device=device, amp_dtype=amp_dtype,
                      seed=recipe.seed, name=role.name, fold=ctx.fold, output_dir=ctx.model_dir, meta=meta.to_dict(),
                      run=ctx.run, tensorboard=tensorboard, channels_last=runtime.channels_last,
                      compile_model=runtime.compile, sync_batchnorm=runtime.sync_batchnorm, on_epoch=ctx.on_epoch)
    result = trainer.fit(loader, resume=ctx.resume)
    if tensorboard is not None:
        tensorboard.close()
    fit = {"kept": result.kept, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
           "stopped_early": result.stopped_early, "notes": result.notes}
    companions: dict[str, FoldOutput] = {}
    final = result.model
    if partners:
        partner_model, final = unwrap_pair(result.model).split_pair()
        # As the engine records them; the kept epoch is the one the pair's monitor (the student's) chose.
        saved = {"kept": result.kept, "best_epoch": result.best_epoch, "best_score": result.best_score,
                 "epochs_run": result.epochs_run, "monitor": monitor, "mode": mode}
        if is_main_process():  # the pair's weights the engine wrote become two models, each its own folder
            save_weights(ctx.model_dir / "model.safetensors", final.state_dict(), {**meta.to_dict(), **saved})
            partner_dir = ctx.run.model_dir(partner.name, ctx.fold)
            partner_dir.mkdir(parents=True, exist_ok=True)
            save_weights(partner_dir / "model.safetensors", partner_model.state_dict(),
                         {**partner_meta.to_dict(), **saved, "trained_with": role.name})
        rows, columns = vertical.predict(recipe, partner, partner_model, sets, test_loader, ctx, device, amp_dtype)
        companions[partner.name] = FoldOutput(rows, columns, {**sets.info, **fit, "trained_with": role.name,
                                                              vertical.counts_key: sets.counts})

    rows, columns = vertical.predict(recipe, role, final, sets, test_loader, ctx, device, amp_dtype)
    trainer.discard_checkpoint()
    info = {**sets.info, **fit, vertical.counts_key: sets.counts}
    return FoldOutput(rows, columns, info, companions)


def run_pipeline(vertical: Vertical, recipe: Any, out: str | Path, folds: Sequence[int] | None = None,
                 resume: bool = True, build_report: bool = True) -> RunDir:
    """Train every role on each requested fold, then profile the architectures and write the report once every
    fold of every role is finished (fold jobs run elsewhere are merged with ``report --merge``)."""
    started = time.perf_counter()
    seed_everything(recipe.seed, deterministic=recipe.runtime.deterministic)
    init_from_env(resolve_device(recipe.runtime.device))
    roles = vertical.roles(recipe)
    check_models(vertical, recipe)
    for section in dict.fromkeys(role.config for role in roles):  # a baseline may share the student's section
        check_per_rank_batch(getattr(recipe, section).train.batch_size, world_size(), f"{section}.train.batch_size")
    with undo_new_folder_on_error(out):
        run = open_run(recipe, out)
        data = vertical.prepare_data(recipe, run)
        manifest = manifest_for_run(run, vertical.build_manifest(recipe, data))
        if is_main_process():
            vertical.write_dataset_index(run, data)
        specs = [ModelSpec(role.name, lambda ctx, role=role: train_role(vertical, role, recipe, data, ctx),
                           role.requires, role.trained_with) for role in roles]
        runner = FoldRunner(run, manifest, specs)
        runner.run_folds(folds, resume=resume)
    if not is_main_process():
        return run
    builders = {role.name: (lambda role=role: build_model(vertical.model_meta(recipe, role, data, -1, "")))
                for role in roles}
    profile_models(run, builders, vertical.input_shape(recipe, data), vertical.latency_runs(recipe))
    finish_run(run, runner, vertical.name, vertical.build_report if build_report else None,
               vertical.report_bootstrap(recipe), recipe.seed)
    log.info("run finished in %.1f s: %s", time.perf_counter() - started, run.path)
    return run


def _role(vertical: Vertical, recipe: Any, name: str) -> Role:
    for role in vertical.roles(recipe):
        if role.name == name:
            return role
    raise KeyError(f"{vertical.name}: no role {name!r} in this recipe")


def check_models(vertical: Vertical, recipe: Any) -> None:
    """Refuse, before any work, a model that cannot be built (unknown name, missing local weights)."""
    for section in dict.fromkeys(role.config for role in vertical.roles(recipe)):
        cfg = getattr(recipe, section)
        check_model_choice(cfg.model, cfg.weights, key=section, pretrained=cfg.pretrained)


def sweep_adapter(vertical: Vertical, schema: type, objectives: dict[str, str], score: Any, fidelity: Any) -> Any:
    """The :class:`~kdcore.sweep.SweepAdapter` of a vertical: its data, roles and models; the vertical adds only
    how a trial's validation predictions are scored (``score``) and compared with its teachers (``fidelity``)."""
    from .sweep import SweepAdapter

    def prepare(recipe: Any, run: RunDir) -> tuple[Any, FoldManifest]:
        data = vertical.prepare_data(recipe, run)
        return data, vertical.build_manifest(recipe, data)

    def check_sweepable(recipe: Any) -> None:
        roles = vertical.roles(recipe)
        if any(role.trained_with for role in roles) or not set(vertical.teacher_names) <= {r.name for r in roles}:
            raise ConfigError(f"{vertical.name} sweep trains the teachers once per fold and distils offline from "
                              "them: a recipe with distillation: online or without its teachers cannot be swept")
        check_models(vertical, recipe)

    def student_network(recipe: Any, data: Any) -> torch.nn.Module:
        return build_model(vertical.model_meta(recipe, _role(vertical, recipe, "student"), data, -1, ""))

    return SweepAdapter(
        tool=vertical.name, schema=schema, objectives=objectives,
        teachers=vertical.teacher_names,
        trial_sections=("student", "baseline", "report", "runtime", "name"), prepare=prepare,
        train=lambda name, recipe, data, ctx: train_role(vertical, _role(vertical, recipe, name), recipe, data, ctx),
        score=score, fidelity=fidelity, build_student=student_network,
        input_shape=lambda recipe: vertical.input_shape(recipe, None),
        check_models=check_sweepable, n_folds=vertical.n_folds)
