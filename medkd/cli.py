"""medkd: KD-OCT retinal OCT classification, from data audit to exported student."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kdcore.cli import (add_export_command, add_report_command, add_run_command, add_split_command, lazy,
                        print_audit, run_main)

__all__ = ["main", "build_parser"]


def _split(recipe):
    from .data import load_oct_dataset
    from .data_prep import resolve_data
    from .pipeline import build_manifest

    root, fmt = resolve_data(recipe, None)
    dataset = load_oct_dataset(root, fmt, subset=recipe.data.subset if fmt == "neh" else None,
                               classes=recipe.data.classes)
    return build_manifest(recipe, dataset)


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import audit_oct

    report = audit_oct(args.data_root, args.format, subset=args.subset, near_duplicates=not args.no_near_duplicates,
                       mode=args.mode, n_folds=args.folds)
    counts = report.to_dict().get("counts")
    return print_audit(report, json.dumps(counts, indent=1) if counts else None, args.out)


def cmd_synth(args: argparse.Namespace) -> int:
    from .synth import write_synthetic_oct

    summary = write_synthetic_oct(args.out, n_patients=args.patients, seed=args.seed,
                                  image_size=(args.width, args.height))
    print(json.dumps(summary.to_dict(), indent=1, default=str))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predictor import OCTClassifier, predict_files

    rows = predict_files(OCTClassifier.load(args.model, backend=args.backend), args.images, args.out, tta=args.tta)
    print(f"wrote {args.out} ({len(rows)} image(s))")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medkd", description=__doc__.strip(),
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_run_command(sub, "medkd", lazy("medkd.config", "OCTRecipe"), lazy("medkd.pipeline", "run_pipeline"),
                    n_folds=lambda r: 1 if r.data.evaluation == "official_test" else r.cv.folds,
                    help="train teacher, distilled student and no-KD baseline per patient-level fold, then report",
                    example="medkd run pipelines/kd_oct_demo.yaml --out runs/demo")
    add_split_command(sub, lazy("medkd.config", "OCTRecipe"), _split, "patient")

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

    add_report_command(sub, lazy("medkd.report", "build_report"))
    add_export_command(sub, lazy("medkd.export", "export_run"), "onnx,torchscript,bundle",
                       help="export a trained student (ONNX, TorchScript, MONAI bundle) with parity checks",
                       schema_option=True)

    p = sub.add_parser("predict", help="classify B-scans with an exported model; writes a CSV")
    p.add_argument("model", type=Path, help="export folder, .onnx or .ts file")
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--out", type=Path, default=Path("predictions.csv"))
    p.add_argument("--tta", action="store_true", help="average with the horizontal mirror")
    p.add_argument("--backend", choices=["onnx", "onnx-int8", "torchscript", "torch"], default=None,
                   help="runtime (default: the int8 ONNX model when the export has one, else model.onnx)")
    p.set_defaults(handler=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
