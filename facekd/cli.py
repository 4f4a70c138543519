"""facekd: facial landmark distillation (Tolerant/Tough teachers, KD-Loss student), from audit to export."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kdcore.cli import (add_config_command, add_export_command, add_predict_device_option, add_report_command,
                        add_run_command, add_split_command, add_sweep_command, lazy, print_audit, run_main)

__all__ = ["main", "build_parser"]
FORMATS = ["300w", "wflw", "cofw", "folder"]


def _split(recipe):
    from .audit import audit_faces, integrity_gate
    from .data_prep import build_manifest, resolve_data

    root, fmt = resolve_data(recipe, None)
    report = audit_faces(root, fmt, check_images=False)
    excluded = set(integrity_gate(report, exclude=recipe.data.on_bad_image == "exclude"))
    return build_manifest(recipe, [r for r in report.records if r.record_id not in excluded])


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import audit_faces

    report = audit_faces(args.data_root, args.format, split=args.split, check_images=not args.no_check_images,
                         n_points=args.n_points)
    return print_audit(report, f"{report.images} images, {report.faces} faces, {report.subjects} subjects", args.out)


def cmd_synth(args: argparse.Namespace) -> int:
    from .synth import write_synthetic_faces

    summary = write_synthetic_faces(args.out, args.faces, seed=args.seed, subjects=args.subjects)
    summary.pop("images", None)
    print(json.dumps(summary, indent=1, default=str))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predictor import predict_files

    from .predictor import LandmarkDetector

    detector = LandmarkDetector.load(args.model, backend=args.backend, device=args.device)
    written = predict_files(detector, args.images, args.out, overlay=args.overlay, tta=args.tta,
                            all_faces=args.all_faces)
    for record in written:  # which box was chosen, and on what evidence
        if record["pts"] is None:
            print(record["no_face"])
            continue
        face = record["face"]
        print(f"{record['pts']}: face box {face['box']}, face score {face['face_score']} "
              f"({face['neighbors']} neighbours, plausibility {face['plausibility']}"
              f"{'' if face['model_informative'] else ' (model uninformative: not used)'}; "
              f"{record['candidates']} candidate(s))")
    n_written = sum(r["pts"] is not None for r in written)
    print(f"wrote {n_written} .pts file(s) to {args.out} (faces.json: chosen boxes and face scores)")
    # Images without a face are reported, not fatal (as face_alignment and dlib return no face); a batch in
    # which no image had one wrote nothing and fails.
    return 0 if n_written else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facekd", description=__doc__.strip(),
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_run_command(sub, "facekd", lazy("facekd.config", "FaceRecipe"), lazy("facekd.pipeline", "run_pipeline"),
                    n_folds=lambda r: 1 if r.data.evaluation == "official" else r.cv.folds,
                    help="train Tough/Tolerant teachers, KD-Loss student and L2 baseline per fold, then report",
                    example="facekd run pipelines/face_kd_demo.yaml --out runs/demo-face")
    add_config_command(sub, "facekd", lazy("facekd.config", "FaceRecipe"))
    add_split_command(sub, lazy("facekd.config", "FaceRecipe"), _split, "subject")

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

    add_report_command(sub, lazy("facekd.report", "build_report"))
    add_sweep_command(sub, "facekd", lambda: lazy("facekd.sweep", "adapter")()(),
                      example="facekd sweep pipelines/face_kd_demo.yaml "
                              "--space SPACE.yaml --trials 8 --out runs/sweep")
    add_export_command(sub, lazy("facekd.export", "export_run"), "onnx,torchscript",
                       help="export a trained student (ONNX, TorchScript) with parity checks")

    p = sub.add_parser("predict", help="predict landmarks with an exported model; writes one 1-based .pts per image")
    p.add_argument("model", type=Path, help="export folder, .onnx or .ts file")
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--overlay", action="store_true", help="also write PNGs with the points drawn")
    p.add_argument("--all-faces", action="store_true",
                   help="landmarks for every detected face (<stem>_face<k>.pts, best face score first)")
    p.add_argument("--tta", action="store_true", help="average with the mirrored face (left/right relabelled)")
    p.add_argument("--backend", choices=["onnx", "torchscript", "torch"], default=None,
                   help="runtime (default: ONNX Runtime when model.onnx is there)")
    add_predict_device_option(p)
    p.set_defaults(handler=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
