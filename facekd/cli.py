"""facekd: facial landmark distillation (Tolerant/Tough teachers, KD-Loss student), from audit to export."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from kdcore.cli import add_run_arguments, check_resume, recipe_overrides, run_main

__all__ = ["main", "build_parser"]
FORMATS = ["300w", "wflw", "cofw", "folder"]


def _load(args: argparse.Namespace):
    from kdcore.config import load_recipe

    from .config import FaceRecipe

    return load_recipe(FaceRecipe, args.recipe, args.overrides, recipe_overrides(args))


def cmd_run(args: argparse.Namespace) -> int:
    from kdcore.rundir import default_run_dir
    from kdcore.runner import parse_folds

    from .pipeline import run_pipeline

    started = time.perf_counter()
    recipe = _load(args)
    out = args.out or default_run_dir(recipe.name)
    check_resume(out, args.resume)
    n_folds = 1 if recipe.data.evaluation == "official" else recipe.cv.folds
    run = run_pipeline(recipe, out, folds=parse_folds(args.folds, n_folds), resume=True)
    print(f"facekd run: {run.path} finished in {time.perf_counter() - started:.1f} s")
    if (run.path / "report.json").exists():
        print(f"report: {run.path / 'report.html'}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from .audit import audit_faces, integrity_gate
    from .data_prep import build_manifest, resolve_data

    recipe = _load(args)
    root, fmt = resolve_data(recipe, None)
    report = audit_faces(root, fmt, check_images=False)
    integrity_gate(report, exclude=recipe.data.on_bad_image == "exclude")
    manifest = build_manifest(recipe, report.records)
    manifest.save(args.split_out)
    for split in manifest.folds:
        print(f"fold {split.fold}: train {len(split.train)} / val {len(split.val)} / test {len(split.test)} subjects")
    print(f"wrote {args.split_out} (manifest {manifest.sha})")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from kdcore.atomic import atomic_write_json

    from .audit import audit_faces

    report = audit_faces(args.data_root, args.format, split=args.split, check_images=not args.no_check_images,
                         n_points=args.n_points)
    for problem in report.problems:
        print(f"{problem.severity.upper():8s} {problem}")
    summary = report.to_dict()
    print(f"{summary.get('images')} images, {summary.get('faces')} faces, {summary.get('subjects')} subjects")
    if args.out:
        atomic_write_json(args.out, summary)
        print(f"wrote {args.out}")
    blocking = len(report.blocking)
    print(f"{blocking} blocking problem(s), {len(report.problems) - blocking} other finding(s)")
    return 1 if blocking else 0


def cmd_synth(args: argparse.Namespace) -> int:
    from .synth import write_synthetic_faces

    summary = write_synthetic_faces(args.out, args.faces, seed=args.seed, subjects=args.subjects)
    summary.pop("images", None)
    print(json.dumps(summary, indent=1, default=str))
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

    written = predict_files(args.model, args.images, args.out, overlay=args.overlay)
    print(f"wrote {len(written)} .pts file(s) to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facekd", description=__doc__.strip(),
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("run", help="train Tough/Tolerant teachers, KD-Loss student and L2 baseline per fold, then report",
                       description="Example: facekd run pipelines/face_kd_demo.yaml --out runs/demo-face")
    add_run_arguments(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("split", help="write the fold manifest (folds.json) without training")
    p.add_argument("recipe", type=Path)
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--out", dest="split_out", type=Path, default=Path("folds.json"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(handler=cmd_split, device=None)

    p = sub.add_parser("audit", help="check a face dataset: unreadable images, bad annotations, duplicates",
                       description="Exit status 1 when blocking problems are found.")
    p.add_argument("data_root", type=Path)
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--split", help="only this split (e.g. train, common, challenging, test, pose)")
    p.add_argument("--n-points", type=int, help="expected points per face (folder format)")
    p.add_argument("--no-check-images", action="store_true", help="skip decoding and perceptual hashing")
    p.add_argument("--out", type=Path, help="write the findings as JSON")
    p.set_defaults(handler=cmd_audit)

    p = sub.add_parser("synth", help="write synthetic faces with 68-point .pts in a 300W-like folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--faces", type=int, default=200)
    p.add_argument("--subjects", type=int, default=None, help="distinct identities (default faces/4)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_synth)

    p = sub.add_parser("report", help="rebuild report.json/report.html from a run's saved predictions")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--merge", type=Path, nargs="*", default=[], help="run folders of other fold jobs to merge first")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("export", help="export a trained student (ONNX, TorchScript) with parity checks")
    p.add_argument("run_dir", type=Path)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--fold", type=int)
    group.add_argument("--all-folds", action="store_true")
    p.add_argument("--format", default="onnx,torchscript")
    p.add_argument("--model", default="student")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("predict", help="predict landmarks with an exported model; writes one 1-based .pts per image")
    p.add_argument("model", type=Path, help="export folder, .onnx or .ts file")
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--overlay", action="store_true", help="also write PNGs with the points drawn")
    p.set_defaults(handler=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
