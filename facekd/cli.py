"""facekd: facial landmark distillation (Tolerant/Tough teachers, KD-Loss student), from audit to export."""

from __future__ import annotations

import argparse
from functools import partial
import json
import sys
from pathlib import Path

from kdcore.cli import Command, VerticalCLI, print_audit, run_main, vertical_parser

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
    print(f"wrote {n_written} .pts file(s) to {args.out} with backend {detector.backend} "
          "(faces.json: chosen boxes and face scores)")
    # Images without a face are reported, not fatal (as face_alignment and dlib return no face); a batch in
    # which no image had one wrote nothing and fails.
    return 0 if n_written else 1


def _audit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", help="only this split (e.g. train, common, challenging, test, pose)")
    p.add_argument("--n-points", type=int, help="expected points per face (folder format)")
    p.add_argument("--no-check-images", action="store_true", help="skip decoding and perceptual hashing")


def _synth_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--faces", type=int, default=200)
    p.add_argument("--subjects", type=int, default=None, help="distinct identities (default faces/4)")


def _predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--overlay", action="store_true", help="also write PNGs with the points drawn")
    p.add_argument("--all-faces", action="store_true",
                   help="landmarks for every detected face (<stem>_face<k>.pts, best face score first)")


CLI = VerticalCLI(
    tool="facekd", description=__doc__, group_name="subject", vertical="facekd.vertical:FACES",
    schema="facekd.config:FaceRecipe",
    run_help="train Tough/Tolerant teachers, KD-Loss student and L2 baseline per fold, then report",
    run_example="facekd run pipelines/face_kd_demo.yaml --out runs/demo-face", split=_split,
    audit_formats=FORMATS,
    audit=Command("check a face dataset: unreadable images, bad annotations, duplicates", cmd_audit,
                  _audit_arguments),
    synth=Command("write synthetic faces with 68-point .pts in a 300W-like folder", cmd_synth, _synth_arguments),
    predict=Command("predict landmarks with an exported model (left/right relabelled under --tta); writes one "
                    "1-based .pts per image", cmd_predict, _predict_arguments),
    predict_backends=["onnx", "onnx-int8", "torchscript", "torch"],
    export="facekd.export:export_run", sweep="facekd.sweep:adapter", export_formats="onnx,torchscript",
    export_help="export a trained student (ONNX, TorchScript; onnx-int8 on request) with parity checks",
    sweep_example="facekd sweep pipelines/face_kd_demo.yaml --space SPACE.yaml --trials 8 --out runs/sweep")


build_parser = partial(vertical_parser, CLI)
main = partial(run_main, build_parser)  # main(argv=None) -> exit status


if __name__ == "__main__":
    sys.exit(main())
