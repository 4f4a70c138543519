"""medkd: KD-OCT retinal OCT classification, from data audit to exported student."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from kdcore.cli import add_run_arguments, check_resume, recipe_overrides, run_main

__all__ = ["main", "build_parser"]


def _load(args: argparse.Namespace):
    from kdcore.config import load_recipe

    from .config import OCTRecipe

    return load_recipe(OCTRecipe, args.recipe, args.overrides, recipe_overrides(args))


def cmd_run(args: argparse.Namespace) -> int:
    from kdcore.rundir import default_run_dir
    from kdcore.runner import parse_folds

    from .pipeline import run_pipeline

    started = time.perf_counter()
    recipe = _load(args)
    out = args.out or default_run_dir(recipe.name)
    check_resume(out, args.resume)
    n_folds = 1 if recipe.data.evaluation == "official_test" else recipe.cv.folds
    run = run_pipeline(recipe, out, folds=parse_folds(args.folds, n_folds), resume=True)
    print(f"medkd run: {run.path} finished in {time.perf_counter() - started:.1f} s")
    report = run.path / "report.json"
    if report.exists():
        print(f"report: {run.path / 'report.html'}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from .data_prep import resolve_data
    from .data import load_oct_dataset
    from .pipeline import build_manifest

    recipe = _load(args)
    root, fmt = resolve_data(recipe, None)
    dataset = load_oct_dataset(root, fmt, subset=recipe.data.subset if fmt == "neh" else None,
                               classes=recipe.data.classes)
    manifest = build_manifest(recipe, dataset)
    manifest.save(args.split_out)
    for split in manifest.folds:
        print(f"fold {split.fold}: train {len(split.train)} / val {len(split.val)} / test {len(split.test)} patients; "
              f"test images {split.class_counts.get('test')}")
    print(f"wrote {args.split_out} (manifest {manifest.sha})")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from kdcore.atomic import atomic_write_json

    from .audit import audit_oct

    report = audit_oct(args.data_root, args.format, subset=args.subset, near_duplicates=not args.no_near_duplicates,
                       mode=args.mode, n_folds=args.folds)
    summary = report.to_dict()
    for problem in report.problems:
        print(f"{problem.severity.upper():8s} {problem}")
    counts = summary.get("counts", {})
    print(json.dumps(counts, indent=1) if counts else "", end="\n" if counts else "")
    if args.out:
        atomic_write_json(args.out, summary)
        print(f"wrote {args.out}")
    blocking = len(report.blocking)
    print(f"{blocking} blocking problem(s), {len(report.problems) - blocking} other finding(s)")
    return 1 if blocking else 0


def cmd_synth(args: argparse.Namespace) -> int:
    from .synth import write_synthetic_oct

    summary = write_synthetic_oct(args.out, n_patients=args.patients, seed=args.seed,
                                  image_size=(args.width, args.height))
    print(json.dumps(summary.to_dict(), indent=1, default=str))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from kdcore.runner import merge_runs

    from .report import build_report

    if args.merge:
        copied = merge_runs(args.run_dir, args.merge)
        print(f"merged {len(copied)} fold model(s) into {args.run_dir}")
    build_report(args.run_dir, n_boot=args.bootstrap, seed=args.seed)
    print(f"report: {Path(args.run_dir) / 'report.html'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_run

    folds = "all" if args.all_folds else ([args.fold] if args.fold is not None else None)
    formats = {f.strip() for f in args.format.split(",") if f.strip()}
    summary = export_run(args.run_dir, folds=folds, formats=formats, out_dir=args.out, model=args.model)
    print(json.dumps(summary, indent=1, default=str))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predictor import predict_files

    rows = predict_files(args.model, args.images, args.out, tta=args.tta)
    print(f"wrote {args.out} ({len(rows)} image(s))")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medkd", description=__doc__.strip(),
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("run", help="train teacher, distilled student and baseline per patient-level fold, then report",
                       description="Train teacher, KD student and no-KD baseline on every patient-level fold of one "
                                   "manifest, then write report.json/report.html. Example: medkd run "
                                   "pipelines/kd_oct_demo.yaml --out runs/demo")
    add_run_arguments(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("split", help="write the fold manifest (folds.json) without training, to review first")
    p.add_argument("recipe", type=Path)
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--out", dest="split_out", type=Path, default=Path("folds.json"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(handler=cmd_split, device=None)

    p = sub.add_parser("audit", help="check a dataset: unreadable images, missing rows/files, duplicates, leaks",
                       description="Exit status 1 when blocking problems are found.")
    p.add_argument("data_root", type=Path)
    p.add_argument("--format", required=True, choices=["neh", "oct2017", "manifest"])
    p.add_argument("--subset", default="all", choices=["all", "worst_case"], help="NEH subset")
    p.add_argument("--mode", default="cv", choices=["cv", "official"],
                   help="official: train/test patient overlap is blocking")
    p.add_argument("--folds", type=int, default=None, help="flag classes with fewer patients than this")
    p.add_argument("--no-near-duplicates", action="store_true", help="skip perceptual hashing")
    p.add_argument("--out", type=Path, help="write the findings as JSON")
    p.set_defaults(handler=cmd_audit)

    p = sub.add_parser("synth", help="write a synthetic OCT dataset in the NEH layout")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--patients", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--height", type=int, default=496)
    p.set_defaults(handler=cmd_synth)

    p = sub.add_parser("report", help="rebuild report.json/report.html from a run's saved predictions")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--merge", type=Path, nargs="*", default=[], help="run folders of other fold jobs to merge first")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("export", help="export a trained student (ONNX, TorchScript, MONAI bundle) with parity checks")
    p.add_argument("run_dir", type=Path)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--fold", type=int)
    group.add_argument("--all-folds", action="store_true")
    p.add_argument("--format", default="onnx,torchscript,bundle")
    p.add_argument("--model", default="student", help="which model of the run to export")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("predict", help="classify B-scans with an exported model; writes a CSV")
    p.add_argument("model", type=Path, help="export folder, .onnx or .ts file")
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--out", type=Path, default=Path("predictions.csv"))
    p.add_argument("--tta", action="store_true", help="average with the horizontal mirror")
    p.set_defaults(handler=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
