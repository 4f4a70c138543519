"""The command line of every vertical: :func:`vertical_parser` builds ``run``, ``config``, ``split``, ``report``,
``export``, ``sweep``, ``audit``, ``synth`` and ``predict`` from what a vertical declares (:class:`VerticalCLI`).

``run``, ``config``, ``split``, ``report``, ``export`` and ``sweep`` are the same for every vertical; ``audit``,
``synth`` and ``predict`` share their common arguments here and take the vertical's own through a
:class:`Command`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import KDError

__all__ = ["Command", "VerticalCLI", "vertical_parser", "lazy", "print_audit", "add_run_command", "add_config_command", "add_split_command", "add_report_command", "add_export_command",
           "check_resume", "run_main", "recipe_overrides", "decide_run_folder", "add_predict_device_option",
           "add_sweep_command"]


def lazy(module: str, name: str) -> Callable[[], Any]:
    """``lazy("medkd.report", "build_report")()`` imports on first use, so ``--help`` stays fast."""

    def load() -> Any:
        import importlib

        return getattr(importlib.import_module(module), name)

    return load


def print_audit(report: Any, counts: str | None, out: Path | None,
                redact: Callable[[Any], Any] | None = None) -> int:
    """Print an audit's findings and counts, write its JSON to ``out`` (through ``redact.json`` when given: the
    file may be shared, the terminal is the user's own); exit status 1 when anything blocks."""
    from .atomic import atomic_write_json

    for problem in report.problems:
        print(f"{problem.severity.upper():8s} {problem}")
    if counts:
        print(counts)
    if out:
        atomic_write_json(out, redact.json(report.to_dict()) if redact is not None else report.to_dict())
        print(f"wrote {out}")
    blocking = len(report.blocking)
    print(f"{blocking} blocking problem(s), {len(report.problems) - blocking} other finding(s)")
    return 1 if blocking else 0


def recipe_overrides(args: argparse.Namespace) -> dict:
    extra = {}
    if getattr(args, "data_root", None) is not None:
        extra["data.root"] = str(args.data_root)
    if getattr(args, "device", None):
        extra["runtime.device"] = args.device
    return extra


def _load_recipe(schema: type, args: argparse.Namespace):
    from .config import load_recipe

    return load_recipe(schema, args.recipe, args.overrides, recipe_overrides(args))


def check_resume(out: Path, resume: bool) -> None:
    """Refuse to write into a folder holding another run unless ``--resume`` says to continue it."""
    if (out / "config.yaml").exists() and not resume:
        raise KDError(f"{out}: already holds a run; pass --resume to continue it (or to add folds), "
                      "or choose another --out")
    if resume and not (out / "config.yaml").exists():
        raise KDError(f"{out}: --resume given but there is no run to continue in this folder")


def decide_run_folder(recipe: Any, out: Path | None, resume: bool) -> Path:
    """The run folder and the resume check, decided by rank 0 after the process group exists.

    Under torchrun each rank checking for itself could find the ``config.yaml`` rank 0 has just written and
    stop ("already holds a run"), and without ``--out`` each would stamp its own folder with its own clock.
    """
    from .device import resolve_device
    from .engine.distributed import broadcast_object, init_from_env, is_main_process
    from .run_folder import default_run_dir

    init_from_env(resolve_device(recipe.runtime.device))
    problem = None
    if is_main_process():
        out = out or default_run_dir(recipe.name)
        try:
            check_resume(out, resume)
        except KDError as exc:
            problem = exc
    out, problem = broadcast_object((out, problem))
    if problem is not None:
        raise problem
    return out


def add_run_command(sub: Any, tool: str, schema_loader: Callable[[], type], pipeline: Callable[[], Callable],
                    n_folds: Callable[[Any], int], help: str, example: str) -> None:
    """``run RECIPE [--set k=v] [--data-root D] [--out DIR] [--folds 0,1] [--resume] [--device D]``."""

    def handler(args: argparse.Namespace) -> int:
        from .fold_runner import parse_folds

        started = time.perf_counter()
        recipe = _load_recipe(schema_loader(), args)
        out = decide_run_folder(recipe, args.out, args.resume)
        run = pipeline()(recipe, out, folds=parse_folds(args.folds, n_folds(recipe)), resume=True)
        print(f"{tool} run: {run.path} finished in {time.perf_counter() - started:.1f} s")
        if (run.path / "report.json").exists():
            print(f"report: {run.path / 'report.html'}")
        return 0

    parser = sub.add_parser("run", help=help, description=f"{help}. Example: {example}")
    parser.add_argument("recipe", type=Path, help="recipe YAML (see pipelines/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set student.temperature=2 (repeatable)")
    parser.add_argument("--data-root", type=Path, help="dataset folder (sets data.root)")
    parser.add_argument("--out", type=Path, help="run folder (default runs/<recipe name>-<timestamp>)")
    parser.add_argument("--folds", help="only these folds, e.g. 0,1 or 2-4 (merge later with `report --merge`)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out: finished folds are kept, an interrupted model "
                             "restarts from its last checkpoint")
    parser.add_argument("--device", help="override runtime.device (auto, cpu, cuda, cuda:1, mps)")
    parser.set_defaults(handler=handler)


def add_config_command(sub: Any, tool: str, schema_loader: Callable[[], type]) -> None:
    """``config RECIPE [--set k=v] [--data-root D] [--device D]``: the fully resolved recipe as YAML on stdout.

    Every default filled in and every shorthand resolved (e.g. ``student.alpha`` into ``ce_weight``/``kd_weight``),
    exactly what ``run`` would use and write to ``config.yaml``; an invalid recipe fails as ``run`` does.
    """

    def handler(args: argparse.Namespace) -> int:
        import yaml

        recipe = _load_recipe(schema_loader(), args)
        sys.stdout.write(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
        return 0

    help = "print the fully resolved recipe (defaults filled in, --set applied, shorthands resolved) as YAML"
    parser = sub.add_parser("config", help=help,
                            description=f"{help}. Example: {tool} config RECIPE --set student.alpha=0.5")
    parser.add_argument("recipe", type=Path, help="recipe YAML (see pipelines/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, as for run (repeatable)")
    parser.add_argument("--data-root", type=Path, help="dataset folder (sets data.root)")
    parser.add_argument("--device", help="override runtime.device")
    parser.set_defaults(handler=handler)


def add_split_command(sub: Any, schema_loader: Callable[[], type],
                      make_manifest: Callable[[Any], Any], group_name: str) -> None:
    """``split RECIPE --data-root D [--out folds.json]``: the fold manifest, to review before training."""

    def handler(args: argparse.Namespace) -> int:
        manifest = make_manifest(_load_recipe(schema_loader(), args))
        manifest.save(args.split_out)
        for split in manifest.folds:
            print(f"fold {split.fold}: train {len(split.train)} / val {len(split.val)} / test {len(split.test)} "
                  f"{group_name}s (val share {split.val_share}, asked {manifest.val_fraction}); "
                  f"test items {split.class_counts.get('test')}")
        print(f"wrote {args.split_out} (manifest {manifest.sha})")
        return 0

    parser = sub.add_parser("split", help="write the fold manifest (folds.json) without training, to review first")
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--out", dest="split_out", type=Path, default=Path("folds.json"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.set_defaults(handler=handler)


def add_report_command(sub: Any, build_report: Callable[[], Callable]) -> None:
    """``report RUN [--merge OTHER...]``: rebuild the report from saved predictions, merging fold jobs first."""

    def handler(args: argparse.Namespace) -> int:
        from .fold_runner import merge_runs

        if args.merge:
            copied = merge_runs(args.run_dir, args.merge)
            print(f"merged {len(copied)} fold model(s) into {args.run_dir}")
        from .run_folder import Coverage

        report = build_report()(args.run_dir, n_boot=args.bootstrap, seed=args.seed)
        # A report over some folds is useful while fold jobs run, but must not pass for the whole run.
        for note in Coverage(report.get("coverage") or {}).notes():
            print(f"warning: partial report: {note}", file=sys.stderr)
        print(f"report: {Path(args.run_dir) / 'report.html'}")
        return 0

    parser = sub.add_parser("report", help="rebuild report.json/report.html from a run's saved predictions")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--merge", type=Path, nargs="*", default=[],
                        help="run folders of other fold jobs (same recipe and data) to merge first")
    parser.add_argument("--bootstrap", type=int, default=None, help="resamples (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=handler)


def add_export_command(sub: Any, export_run: Callable[[], Callable], formats: str, help: str,
                       schema_option: bool = False) -> None:
    """``export RUN [--fold K | --all-folds] --format ... --out DIR`` with parity checks printed."""

    def handler(args: argparse.Namespace) -> int:
        folds = "all" if args.all_folds else ([args.fold] if args.fold is not None else None)
        chosen = {f.strip() for f in args.format.split(",") if f.strip()}
        extra = {"schema": args.schema} if schema_option else {}
        from .run_setup import undo_new_folder_on_error

        with undo_new_folder_on_error(args.out):  # a failed export leaves no half-filled folder for an app to load
            summary = export_run()(args.run_dir, folds=folds, formats=chosen, out_dir=args.out, model=args.model,
                                   int8_gate=args.int8_gate, **extra)
        print(json.dumps(summary, indent=1, default=str))
        return 0

    parser = sub.add_parser("export", help=help)
    parser.add_argument("run_dir", type=Path)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--fold", type=int, help="export this fold's model (default: the best validation score)")
    group.add_argument("--all-folds", action="store_true")
    parser.add_argument("--format", default=formats)
    parser.add_argument("--model", default="student", help="which model of the run to export")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--int8-gate", type=float, default=None,
                        help="onnx-int8's bound instead of the default: least top-1 agreement with float32 for a "
                             "classifier (default 0.99), most NME points added for a landmark model (default 0.1); "
                             "recorded in model.json")
    if schema_option:
        parser.add_argument("--schema", type=Path, default=None,
                            help="local copy of MONAI's meta_schema_20240725.json: also validate the bundle's "
                                 "metadata.json against it offline (default: $KDVISION_MONAI_SCHEMA, else skipped)")
    parser.set_defaults(handler=handler)


def add_predict_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device`` of ``predict``: where the exported model runs (one definition for both verticals)."""
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA when ONNX Runtime's CUDA provider, or PyTorch's CUDA for the other "
                             "backends, is there), cpu, cuda or cuda:N; asking for CUDA without it is an error")


def add_sweep_command(sub: Any, tool: str, adapter: Callable[[], Any], example: str) -> None:
    """``sweep RECIPE --space SPACE.yaml --trials N --out DIR``: an Optuna study over recipe keys (kdcore.sweep)."""

    def handler(args: argparse.Namespace) -> int:
        from .sweep import SweepOptions, run_sweep

        started = time.perf_counter()
        options = SweepOptions(recipe=args.recipe, space=args.space, out=args.out, trials=args.trials,
                               overrides=args.overrides, extra=recipe_overrides(args), storage=args.storage,
                               study=args.study, folds=args.folds, latency_budget_ms=args.latency_budget_ms,
                               multi_objective=args.multi_objective, heartbeat=args.heartbeat,
                               sampler_seed=args.seed, prune=not args.no_prune)
        summary = run_sweep(adapter(), options)
        print(json.dumps(summary, indent=1, default=str))
        print(f"{tool} sweep: {args.out} finished in {time.perf_counter() - started:.1f} s; "
              f"see {args.out / 'sweep.html'}" + (f" and {args.out / 'recommended.yaml'}"
                                                   if summary.get("recommended") else ""))
        return 0

    parser = sub.add_parser("sweep", help="search KD recipe keys (loss, temperature, weights, student) on Optuna, "
                                          "scored on inner-validation patients only",
                            description=f"Example: {example}. Several workers (processes or machines) join one "
                                        "study by running the same command with the same --storage and --study.")
    parser.add_argument("recipe", type=Path, help="base recipe YAML")
    parser.add_argument("--space", type=Path, required=True, help="SPACE.yaml: objective and params (key paths)")
    parser.add_argument("--trials", type=int, default=20, help="trials of the study in total, over all workers")
    parser.add_argument("--out", type=Path, required=True, help="sweep folder (teachers, trials, outputs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a base recipe key (repeatable)")
    parser.add_argument("--data-root", type=Path, help="dataset folder (sets data.root)")
    parser.add_argument("--device", help="override runtime.device; also where latency is measured")
    parser.add_argument("--folds", help="only these folds, e.g. 0 for a hold-out sweep (default: all)")
    parser.add_argument("--storage", help="database URL shared by workers, e.g. postgresql://user@host/db "
                                          "(default: sqlite in --out)")
    parser.add_argument("--study", help="study name (default: <recipe name>-sweep)")
    parser.add_argument("--latency-budget-ms", type=float, help="leave out candidate students slower than this "
                                                                "(batch 1, deployment input size, on --device)")
    parser.add_argument("--multi-objective", action="store_true",
                        help="Pareto front of the validation metric against latency (no pruning)")
    parser.add_argument("--heartbeat", type=int, default=60,
                        help="seconds between a worker's heartbeats; a trial silent for twice this is failed "
                             "and queued again")
    parser.add_argument("--seed", type=int, default=None, help="sampler seed (default: random, so that "
                                                                 "workers explore different points)")
    parser.add_argument("--no-prune", action="store_true", help="never stop a trial early")
    parser.set_defaults(handler=handler)


def run_main(build_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str] | None = None) -> int:
    """Parse, dispatch to ``args.handler``, and turn user errors into one line on stderr with exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        result = args.handler(args)
    except KDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A file the user named or a folder we write to (permissions, disk full, a folder where a file should be).
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


@dataclass
class Command:
    """A vertical's own part of ``audit``, ``synth`` or ``predict``: its help, extra arguments and handler."""

    help: str
    handler: Callable[[argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    description: str | None = None


@dataclass
class VerticalCLI:
    """What a vertical's console script declares; :func:`vertical_parser` builds the commands from it.

    ``vertical``, ``schema``, ``export`` (its ``export_run``) and ``sweep`` (its sweep adapter factory, None for no
    ``sweep`` command) are ``"module:NAME"`` strings, imported on first use so ``--help`` stays fast.
    """

    tool: str
    description: str
    group_name: str
    vertical: str
    schema: str
    run_help: str
    run_example: str
    split: Callable[[Any], Any]
    audit_formats: Sequence[str]
    audit: Command
    synth: Command
    predict: Command
    predict_backends: Sequence[str]
    export: str
    export_formats: str
    export_help: str
    sweep: str | None = None
    sweep_example: str = ""
    export_schema_option: bool = False


def _load(spec: str) -> Callable[[], Any]:
    module, name = spec.split(":")
    return lazy(module, name)


def vertical_parser(cli: VerticalCLI) -> argparse.ArgumentParser:
    """The argument parser of a vertical's console script (``medkd``, ``facekd``)."""
    parser = argparse.ArgumentParser(prog=cli.tool, description=cli.description.strip(),
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    vertical, schema = _load(cli.vertical), _load(cli.schema)

    def run_pipeline(recipe: Any, out: Path, **options: Any) -> Any:
        from .vertical import run_pipeline as run

        return run(vertical(), recipe, out, **options)

    add_run_command(sub, cli.tool, schema, lambda: run_pipeline, n_folds=lambda recipe: vertical().n_folds(recipe),
                    help=cli.run_help, example=cli.run_example)
    add_config_command(sub, cli.tool, schema)
    add_split_command(sub, schema, cli.split, cli.group_name)

    p = sub.add_parser("audit", help=cli.audit.help,
                       description=cli.audit.description or "Exit status 1 when blocking problems are found.")
    p.add_argument("data_root", type=Path)
    p.add_argument("--format", required=True, choices=list(cli.audit_formats))
    cli.audit.arguments(p)
    p.add_argument("--out", type=Path, help="write the findings as JSON")
    p.set_defaults(handler=cli.audit.handler)

    p = sub.add_parser("synth", help=cli.synth.help)
    p.add_argument("--out", type=Path, required=True)
    cli.synth.arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cli.synth.handler)

    add_report_command(sub, lambda: vertical().build_report)
    if cli.sweep is not None:
        add_sweep_command(sub, cli.tool, lambda: _load(cli.sweep)()(), example=cli.sweep_example)
    add_export_command(sub, _load(cli.export), cli.export_formats, help=cli.export_help,
                       schema_option=cli.export_schema_option)

    p = sub.add_parser("predict", help=cli.predict.help)
    p.add_argument("model", type=Path, help="export folder, .onnx or .ts file")
    cli.predict.arguments(p)
    p.add_argument("--tta", action="store_true", help="average with the horizontally mirrored input")
    p.add_argument("--backend", choices=list(cli.predict_backends), default=None,
                   help="runtime (default: the int8 ONNX model when the export has one, else model.onnx)")
    add_predict_device_option(p)
    p.set_defaults(handler=cli.predict.handler)
    return parser
