"""KD recipe sweeps on Optuna with nested selection: teachers once per fold, trials scored on inner validation.

A sweep folder ``DIR`` holds::

    DIR/study.db                  the Optuna study (SQLite) unless --storage names another database
    DIR/teachers/                 a run folder with each fold's teacher(s); their predictions are on the fold's
                                  inner-validation patients (the outer test patients are never predicted)
    DIR/trials/trial_<n>/         one folder per trial: its student of each fold and validation predictions
    DIR/trials.csv, sweep.html, recommended.yaml

Several workers (processes or machines) join one study by running the same command with the same
``--storage`` and ``--study``: ``--trials`` is the study's total, each trial runs once, a worker killed mid-trial
leaves a trial that Optuna's heartbeat marks failed and re-queues for the next worker (or a rerun).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..config import apply_overrides, parse_overrides, read_yaml, validate_recipe
from ..errors import ConfigError, KDError, TrainingError
from ..logs import get_logger
from .space import SweepSpace, check_space, load_space

__all__ = ["SweepAdapter", "SweepOptions", "run_sweep", "make_storage"]
log = get_logger(__name__)
FINISHED = ("COMPLETE", "PRUNED")


@dataclass
class SweepAdapter:
    """What a vertical declares for its sweeps; the search itself is the same for every vertical.

    Args:
        tool: the command name (``medkd``).
        schema: the recipe class.
        objectives: each validation metric a trial can be scored on, and ``"maximize"`` or ``"minimize"``.
        teachers: the model names trained once per fold and shared by every trial.
        trial_sections: top-level recipe sections a trial may change (the rest must stay as the base recipe).
        prepare: ``(recipe, run) -> (data, manifest)``: audit and load the data, the run's fold manifest.
        train: ``(role, recipe, data, ctx) -> FoldOutput``, the vertical's per-fold training of one model.
        score: ``(rows, data) -> {metric: value}`` of a model's validation predictions.
        fidelity: ``(student rows, {teacher: rows}, data) -> {agreement, kl or nme_to_teacher, ...}``.
        build_student: ``(recipe, data) -> nn.Module`` of the recipe's student (for latency).
        input_shape: ``recipe -> (C, H, W)`` of the deployed model's input.
        check_models: ``recipe -> None``; raises when a model choice cannot be built.
        n_folds: ``recipe -> number of folds``.
        student_key, epochs_key: recipe key paths of the student's architecture and training epochs.
    """

    tool: str
    schema: type
    objectives: dict[str, str]
    teachers: tuple[str, ...]
    trial_sections: tuple[str, ...]
    prepare: Callable[[Any, Any], tuple[Any, Any]]
    train: Callable[[str, Any, Any, Any], Any]
    score: Callable[[list[dict], Any], dict[str, float | None]]
    fidelity: Callable[[list[dict], dict[str, list[dict]], Any], dict[str, Any]]
    build_student: Callable[[Any, Any], Any]
    input_shape: Callable[[Any], tuple[int, ...]]
    check_models: Callable[[Any], None]
    n_folds: Callable[[Any], int]
    student_key: str = "student.model"
    epochs_key: str | None = "student.train.epochs"


@dataclass
class SweepOptions:
    recipe: Path
    space: Path
    out: Path
    trials: int
    overrides: Sequence[str] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    storage: str | None = None
    study: str | None = None
    folds: str | None = None
    latency_budget_ms: float | None = None
    multi_objective: bool = False
    heartbeat: int = 60
    sampler_seed: int | None = None
    prune: bool = True


def _value_at(recipe: Any, key: str) -> Any:
    for part in key.split("."):
        recipe = getattr(recipe, part)
    return recipe


class SurplusTrial(Exception):
    """A worker asked for a trial after the study already had its count (two workers asking at once)."""


# ---------------------------------------------------------------- storage and study


_SCHEMA_LOCK = 0x6B64766973696F6E  # pg_advisory_lock key ("kdvision"): one Optuna schema creator at a time


@contextlib.contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """Hold a PostgreSQL session advisory lock while Optuna creates or checks its schema.

    Workers started together on a fresh database otherwise both create Optuna's tables and alembic stamp, and the
    loser dies with a UniqueViolation (``pg_type_typname_nsp_index``, ``alembic_version_pkc``). Other databases:
    nothing is taken (an SQLite study lives on one machine; on MySQL, start one worker first).
    """
    if not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:  # closing the session releases the lock, even after an error
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _SCHEMA_LOCK})
            yield
    finally:
        engine.dispose()


def make_storage(url: str, heartbeat: int):
    """An Optuna RDB storage with heartbeats: a trial whose worker stops beating for ``2 * heartbeat`` seconds
    is marked failed and queued again (once) for the next worker."""
    import optuna
    import sqlalchemy.exc
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings(), _schema_lock(url):  # heartbeats are "experimental" in Optuna since 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                              grace_period=2 * heartbeat,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
    except (sqlalchemy.exc.ArgumentError, ImportError, ModuleNotFoundError) as exc:
        raise ConfigError(f"--storage {_safe_url(url)}: not a usable database URL ({exc})") from None
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise KDError(f"--storage {_safe_url(url)}: cannot connect ({reason})") from None
    except optuna.exceptions.StorageInternalError as exc:
        raise KDError(f"--storage {_safe_url(url)}: {exc}") from None


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown without its credentials part
        return url.split("@")[-1]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Workers sharing a sweep folder train the teachers once: the first holds the lock, the others then
    find them done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------- latency


def measure_student_latency(adapter: SweepAdapter, recipe_for: Callable[[Any], Any], models: Sequence[Any],
                            data: Any, device: str, runs: int) -> dict[str, float]:
    """Median batch-1 latency (ms) of each candidate student on ``device`` at the deployment input size."""
    import torch

    from ..device import resolve_device
    from ..models import measure_latency

    target = resolve_device(device)
    latencies = {}
    for model_name in models:
        recipe = recipe_for(model_name)
        model = adapter.build_student(recipe, data).to(target).eval()
        example = torch.zeros(1, *adapter.input_shape(recipe), device=target)
        if target.type == "cuda":
            def forward(x, model=model):
                out = model(x)
                torch.cuda.synchronize(target)
                return out
        else:
            forward = model
        latencies[str(model_name)] = measure_latency(forward, example, warmup=3, runs=max(runs, 5))["median_ms"]
        del model
    return latencies


# ---------------------------------------------------------------- the sweep


class _Sweep:
    def __init__(self, adapter: SweepAdapter, options: SweepOptions):
        self.adapter, self.options = adapter, options
        if options.trials < 1:
            raise ConfigError(f"--trials must be >= 1, got {options.trials}")
        if options.latency_budget_ms is not None and not options.latency_budget_ms > 0:
            raise ConfigError(f"--latency-budget-ms must be > 0, got {options.latency_budget_ms}")
        if options.heartbeat < 1:
            raise ConfigError(f"--heartbeat must be >= 1 second, got {options.heartbeat}")
        base = read_yaml(options.recipe)
        base = apply_overrides(base, parse_overrides(options.overrides))
        if options.extra:
            base = apply_overrides(base, list(options.extra.items()))
        self.base_data = base
        self.recipe = validate_recipe(adapter.schema, base, source=f"recipe {options.recipe}")
        self.space: SweepSpace = load_space(options.space, adapter.objectives)
        check_space(self.space, adapter.schema, base, adapter.trial_sections)
        for recipe in self._probe_recipes():
            adapter.check_models(recipe)
        from ..fold_runner import parse_folds

        self.folds = parse_folds(options.folds, adapter.n_folds(self.recipe))
        self.out = Path(options.out)
        self.latency: dict[str, float] = {}
        self.excluded: dict[str, float] = {}

    def _probe_recipes(self) -> Iterator[Any]:
        yield self.recipe
        for param in self.space.params:
            for value in param.probe_values():
                yield self.trial_recipe({param.key: value})

    def trial_recipe(self, params: dict[str, Any]) -> Any:
        return validate_recipe(self.adapter.schema, apply_overrides(self.base_data, list(params.items())),
                               source="trial recipe")

    # ---------------------------------------------------------------- phases

    def prepare(self) -> None:
        """Data, folds and teachers, once for every worker sharing this folder."""
        from ..device import resolve_device
        from ..engine import init_from_env
        from ..logs import set_progress, setup_logging
        from ..run_folder import RunDir
        from ..fold_runner import FoldRunner, ModelSpec
        from ..seeding import seed_everything

        recipe = self.recipe
        seed_everything(recipe.seed, deterministic=recipe.runtime.deterministic)
        init_from_env(resolve_device(recipe.runtime.device))
        self.out.mkdir(parents=True, exist_ok=True)
        setup_logging(logfile=self.out / "sweep.log")
        set_progress(recipe.runtime.progress)
        sections = self.adapter.trial_sections
        fixed = {k: v for k, v in recipe.model_dump(mode="json").items() if k not in sections}
        with _file_lock(self.out / ".teachers.lock"):
            run = RunDir.create(self.out / "teachers", recipe, recipe.seed, comparable=fixed)
            self.teacher_run = run
            self.data, self.manifest = self.adapter.prepare(recipe, run)
            path = run.path / "folds.json"
            if path.exists():
                from ..cv import load_manifest

                if load_manifest(path).sha != self.manifest.sha:
                    raise KDError(f"{path}: the data or split settings changed since this sweep started; "
                                  "use a new --out")
            else:
                self.manifest.save(path)
            self._measure_latency()
            specs = [ModelSpec(name, lambda ctx, name=name: self.adapter.train(name, recipe, self.data, ctx))
                     for name in self.adapter.teachers]
            self.teacher_runner = FoldRunner(run, self.manifest, specs, evaluate="val")
            started = time.perf_counter()
            self.teacher_runner.run_folds(self.folds)
            log.info("teachers of folds %s ready in %.1f s", self.folds, time.perf_counter() - started)
        from ..predictions import read_predictions

        self.teacher_rows = {fold: {name: read_predictions(self.teacher_runner.model_dir(name, fold) /
                                                           "predictions.csv") for name in self.adapter.teachers}
                             for fold in self.folds}

    def _measure_latency(self) -> None:
        options = self.options
        if options.latency_budget_ms is None and not options.multi_objective:
            return
        key = self.adapter.student_key
        param = self.space.param(key)
        candidates = list(param.choices) if param is not None and param.choices is not None else \
            [_value_at(self.recipe, key)]
        device = options.extra.get("runtime.device") or self.recipe.runtime.device
        runs = getattr(getattr(self.recipe, "report", None), "latency_runs", 10)
        self.latency = measure_student_latency(self.adapter, lambda m: self.trial_recipe({key: m}), candidates,
                                               self.data, device, runs)
        for name, ms in self.latency.items():
            over = options.latency_budget_ms is not None and ms > options.latency_budget_ms
            print(f"latency {name}: {ms:.2f} ms (batch 1, {device}, input {self.adapter.input_shape(self.recipe)})"
                  + (f" > budget {options.latency_budget_ms:g} ms: left out" if over else ""))
            if over:
                self.excluded[name] = ms
        kept = [c for c in candidates if str(c) not in self.excluded]
        if not kept:
            raise ConfigError(f"--latency-budget-ms {options.latency_budget_ms:g}: no candidate student fits "
                              f"(measured {', '.join(f'{k} {v:.2f} ms' for k, v in self.latency.items())})")
        if param is not None and param.choices is not None:
            param.choices = kept

    # ---------------------------------------------------------------- study

    def study(self):
        import optuna

        options = self.options
        url = options.storage or f"sqlite:///{(self.out / 'study.db').resolve()}"
        storage = make_storage(url, options.heartbeat)
        name = options.study or f"{self.recipe.name}-sweep"
        directions = [self.space.direction] + (["minimize"] if options.multi_objective else [])
        sampler = optuna.samplers.TPESampler(seed=options.sampler_seed, multivariate=True)
        # Validation scores of the first epochs say little (a model trained from scratch often predicts one class
        # until its BatchNorm statistics settle): compare trials only from halfway through the first fold's
        # training, and only once a few trials have finished.
        epochs = _value_at(self.recipe, self.adapter.epochs_key) if self.adapter.epochs_key else 2
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=max(1, int(epochs) // 2))
                  if options.prune and not options.multi_objective else optuna.pruners.NopPruner())
        identity = {"objective": self.space.objective, "directions": directions,
                    "params": {p.key: {"choices": p.choices, "low": p.low, "high": p.high, "log": p.log,
                                       "step": p.step} for p in self.space.params},
                    "folds": self.folds, "tool": self.adapter.tool,
                    "fixed_recipe": {k: v for k, v in self.recipe.model_dump(mode="json").items()
                                     if k not in self.adapter.trial_sections + ("runtime",)}}
        try:
            study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True, sampler=sampler,
                                        pruner=pruner, directions=directions)
        except ValueError as exc:
            raise KDError(f"study {name!r}: {exc}") from None
        stored = study.user_attrs.get("identity")
        if stored is None:
            study.set_user_attr("identity", json.loads(json.dumps(identity, default=str)))
            study.set_user_attr("trials_target", options.trials)
        elif stored != json.loads(json.dumps(identity, default=str)):
            differs = sorted(k for k in identity if json.loads(json.dumps(identity[k], default=str)) != stored.get(k))
            raise KDError(f"study {name!r} in {_safe_url(url)} was started with another recipe, space or folds "
                          f"(differs in: {', '.join(differs)}); use the same command, or another --study")
        self.storage_url, self.study_name = url, name
        return study

    def run(self) -> dict[str, Any]:
        from ..run_setup import undo_new_folder_on_error

        with undo_new_folder_on_error(self.out):  # bad data or no student within budget: no folder left behind
            self.prepare()
        study = self.study()
        self._work(study)
        from .outputs import write_outputs

        return write_outputs(self, study)

    def _counts(self, study) -> dict[str, int]:
        counts: dict[str, int] = {}
        for trial in study.get_trials(deepcopy=False):
            counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
        return counts

    def _work(self, study) -> None:
        import optuna

        target = self.options.trials
        errors = 0
        while True:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9, and what we need
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            counts = self._counts(study)
            finished = sum(counts.get(s, 0) for s in FINISHED)
            if finished >= target:
                break
            if finished + counts.get("RUNNING", 0) >= target and not counts.get("WAITING"):
                # Other workers hold the last trials; wait for them (or for their heartbeat to stop).
                time.sleep(min(5.0, self.options.heartbeat))
                continue
            before = len(study.trials)
            study.optimize(self.objective, n_trials=1, catch=(SurplusTrial, TrainingError), gc_after_trial=True)
            last = [t for t in study.get_trials(deepcopy=False) if t.number >= before]
            if any(t.state.name == "FAIL" and not t.user_attrs.get("surplus") for t in last):
                errors += 1
                if errors > target:
                    raise KDError(f"{errors} trials of this worker failed (see {self.out / 'sweep.log'}); stopping")

    # ---------------------------------------------------------------- one trial

    def _claim(self, trial) -> None:
        """Refuse a trial numbered past the study's count: two workers may ask for the last one at once."""
        from optuna.trial import TrialState

        alive = [t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                          TrialState.RUNNING))
                 if t.number <= trial.number]
        if len(alive) > self.options.trials:
            trial.set_user_attr("surplus", f"the study already had its {self.options.trials} trials; not run")
            raise SurplusTrial(f"trial {trial.number}: the study already had its {self.options.trials} trials")

    def objective(self, trial):
        import optuna

        from ..predictions import write_predictions
        from ..run_folder import RunDir
        from ..fold_runner import FoldContext

        self._claim(trial)
        params = {p.key: p.suggest(trial) for p in self.space.params}
        recipe = self.trial_recipe(params)
        folder = self.out / "trials" / f"trial_{trial.number:04d}"
        folder.mkdir(parents=True, exist_ok=False)  # a trial number runs once, whichever worker has it
        run = RunDir.create(folder, recipe, recipe.seed)
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        trial.set_user_attr("folder", str(folder.relative_to(self.out)))
        arch = str(_value_at(recipe, self.adapter.student_key))
        if arch in self.latency:
            trial.set_user_attr("latency_ms", self.latency[arch])
        metric = f"val_{self.space.objective}"
        step = [0]
        multi = self.options.multi_objective

        def on_epoch(record: dict) -> None:
            value = record.get(metric)
            if multi or value is None or not math.isfinite(value):
                return
            trial.report(float(value), step[0])
            step[0] += 1
            if trial.should_prune():
                raise optuna.TrialPruned(f"{metric} {value:.4f} at step {step[0] - 1} below the median of "
                                         "earlier trials")

        all_rows: list[dict] = []
        teacher_rows: dict[str, list[dict]] = {name: [] for name in self.adapter.teachers}
        started = time.perf_counter()
        for fold in self.folds:
            model_dir = folder / f"fold_{fold}" / "student"
            model_dir.mkdir(parents=True, exist_ok=True)
            dependencies = {name: self.teacher_runner.model_dir(name, fold) for name in self.adapter.teachers}
            ctx = FoldContext(fold, self.manifest.fold(fold), self.manifest, model_dir, dependencies, run,
                              resume=False, evaluate="val", on_epoch=on_epoch)
            output = self.adapter.train("student", recipe, self.data, ctx)
            write_predictions(model_dir / "predictions.csv", output.predictions, output.columns)
            all_rows.extend(output.predictions)
            for name in self.adapter.teachers:
                teacher_rows[name].extend(self.teacher_rows[fold][name])
        metrics = self.adapter.score(all_rows, self.data)
        fidelity = self.adapter.fidelity(all_rows, teacher_rows, self.data)
        trial.set_user_attr("val_metrics", metrics)
        trial.set_user_attr("fidelity", fidelity)
        trial.set_user_attr("evaluated_on", f"inner-validation {self.manifest.group_name}s of folds {self.folds}, "
                                            f"{len(all_rows)} images")
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
        value = metrics.get(self.space.objective)
        if value is None or not math.isfinite(value):
            raise TrainingError(f"trial {trial.number}: validation {self.space.objective} is undefined")
        log.info("trial %d: %s %.4f %s", trial.number, self.space.objective, value, params)
        if multi:
            return float(value), float(self.latency[arch])
        return float(value)


def run_sweep(adapter: SweepAdapter, options: SweepOptions) -> dict[str, Any]:
    """Validate everything, train the teachers, run this worker's share of the study, write the outputs.

    Returns the summary printed by the CLI: counts by state, the best trial(s) and the output paths.
    """
    return _Sweep(adapter, options).run()
