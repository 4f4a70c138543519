"""medkd: KD-OCT retinal OCT classification, from data audit to exported student."""

from __future__ import annotations

import argparse
from functools import partial
import json
import sys
from pathlib import Path

from kdcore.cli import Command, VerticalCLI, print_audit, run_main, vertical_parser

__all__ = ["main", "build_parser"]


def _hasher(salt: str | None, root: Path):
    """Keyed patient-id hashes (``medkd.privacy``) for commands without a run folder, with the key a run of the
    same data uses, so a volume's real patient id is never printed or written and folds match the run's."""
    from .privacy import patient_hasher, privacy_key

    return patient_hasher(privacy_key(salt, root))


def _split(recipe):
    from .data import load_oct_dataset
    from .data_prep import build_manifest, resolve_data

    from .privacy import hash_ids_enabled, patient_hasher, privacy_key, pseudonymise

    root, fmt = resolve_data(recipe, None)
    if fmt == "volumes":  # folds only: ids are hashed with a throw-away salt, never printed raw
        from .data_prep import volume_options

        dataset = load_oct_dataset(root, fmt, classes=recipe.data.classes,
                                   volumes=volume_options(recipe, _hasher(recipe.privacy.salt, root)))
        return build_manifest(recipe, dataset)
    dataset = load_oct_dataset(root, fmt, subset=recipe.data.subset if fmt == "neh" else None,
                               classes=recipe.data.classes)
    if hash_ids_enabled(recipe, fmt):  # the same pseudonymous ids, and so the same folds.json, as a run's
        dataset = pseudonymise(dataset, patient_hasher(privacy_key(recipe.privacy.salt, root)))
    return build_manifest(recipe, dataset)


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import audit_oct

    volumes = None
    if args.format == "volumes":
        from .data.volume_scan import VolumeOptions

        volumes = VolumeOptions(selection=args.bscans, labels=args.labels, patient_key=_hasher(None, args.data_root),
                                require_labels=args.labels is not None)
    report = audit_oct(args.data_root, args.format, subset=args.subset, near_duplicates=not args.no_near_duplicates,
                       mode=args.mode, n_folds=args.folds, volumes=volumes)
    counts = report.to_dict().get("counts")
    return print_audit(report, json.dumps(counts, indent=1) if counts else None, args.out,
                       redact=_audit_redactor(args) if args.out else None)


def _audit_redactor(args: argparse.Namespace):
    """The terminal shows the user's own paths; the JSON file, meant to be shared, is pseudonymised as a run's
    audit.json is (NEH: hashed patients and ids, unless --raw-ids) and names no folder of this machine."""
    from kdcore.errors import KDError

    from .data import load_oct_dataset
    from .privacy import Redactor, patient_hasher, privacy_key, pseudonymise

    root_only = Redactor({}, roots=[str(args.data_root), str(Path(args.data_root).absolute())])
    if args.format == "volumes":  # patient ids were hashed while the files were read
        return root_only
    try:
        dataset = load_oct_dataset(args.data_root, args.format, subset=args.subset, classes=None)
    except KDError:  # the audit lists why; only the root can be hidden then
        return root_only
    if args.format == "neh" and not args.raw_ids:
        dataset = pseudonymise(dataset, patient_hasher(privacy_key(None, args.data_root)))
    return Redactor.for_dataset(dataset, args.data_root)


def cmd_synth(args: argparse.Namespace) -> int:
    from .synth import write_synthetic_oct

    summary = write_synthetic_oct(args.out, n_patients=args.patients, seed=args.seed,
                                  image_size=(args.width, args.height))
    print(json.dumps(summary.to_dict(), indent=1, default=str))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predictor import OCTClassifier, predict_files
    from .volume_predict import is_volume_input

    volume_inputs = [p for p in args.images if is_volume_input(p)]
    if volume_inputs:
        return _predict_volumes(args, volume_inputs)
    if args.dicom_sr is not None:
        from kdcore.errors import KDError

        raise KDError("--dicom-sr needs DICOM volume inputs (an SR references the source DICOM instances)")
    classifier = OCTClassifier.load(args.model, backend=args.backend, device=args.device)
    rows = predict_files(classifier, args.images, args.out, tta=args.tta)
    print(f"wrote {args.out} ({len(rows)} image(s), backend {classifier.backend})")
    if args.saliency is not None:
        from .predictor import load_gray
        from .saliency import load_torch_model, write_overlays

        model, contract = load_torch_model(args.model)
        items = [(Path(p).stem, load_gray(p)) for p in args.images]
        wanted = [classifier.classes.index(r["class"]) for r in rows]
        print(f"wrote {len(write_overlays(model, contract, items, args.saliency, wanted))} overlay(s) "
              f"in {args.saliency}")
    return 0


def _predict_volumes(args: argparse.Namespace, volume_inputs: list[Path]) -> int:
    from kdcore.errors import KDError
    from kdcore.export.runtime import load_runner

    from .predictor import OCTClassifier
    from .volume_predict import predict_volumes

    if len(volume_inputs) != len(args.images):
        raise KDError("give either B-scan images or volume files/folders to one predict command, not both")
    run, contract, backend, model_file = load_runner(args.model, args.backend, device=args.device)
    result = predict_volumes(OCTClassifier(run, contract, backend), volume_inputs, args.out,
                             aggregate=args.aggregate, topk=args.topk, bscans=args.bscans, tta=args.tta,
                             dicom_sr=args.dicom_sr, saliency=args.saliency, export=args.model,
                             model_file=model_file)
    print(f"wrote {args.out} ({len(result.volumes)} volume(s), {len(result.rows) - len(result.volumes)} B-scan(s), "
          f"aggregate {result.aggregate})")
    for path in result.sr_files:
        print(f"wrote {path}")
    vendor = [info for info, *_ in result.volumes if info.kind != "dicom"]
    if args.dicom_sr is not None and vendor:
        print(f"note: no SR for {len(vendor)} non-DICOM volume(s) (an SR can only reference DICOM instances); "
              "their results are in the CSV")
    if args.saliency is not None:
        print(f"wrote {len(result.overlays)} overlay(s) in {args.saliency}")
    return 0


def _audit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--subset", default="all", choices=["all", "worst_case"], help="NEH subset")
    p.add_argument("--mode", default="cv", choices=["cv", "official"],
                   help="official: train/test patient overlap is blocking")
    p.add_argument("--folds", type=int, default=None, help="flag classes with fewer patients than this")
    p.add_argument("--no-near-duplicates", action="store_true", help="skip perceptual hashing")
    p.add_argument("--bscans", default="all", help="volumes: B-scans per volume (all, central, central_k:K, every:N)")
    p.add_argument("--labels", help="volumes: labels CSV relative to the data root (default: labels.csv if there; "
                                    "patient ids in the findings are hashed)")
    p.add_argument("--raw-ids", action="store_true", help="keep raw patient ids and paths in the --out JSON "
                                                          "(NEH: pseudonymous ids by default, as in a run)")


def _synth_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--patients", type=int, default=30)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--height", type=int, default=496)


def _predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", type=Path, nargs="+", help="B-scan images, or volume files / folders of them")
    p.add_argument("--out", type=Path, default=Path("predictions.csv"))
    p.add_argument("--aggregate", choices=["max", "mean", "topk-mean"], default=None,
                   help="volumes: B-scan probabilities -> one row per volume (default: the recipe's, in the export)")
    p.add_argument("--topk", type=int, default=None, help="volumes: k of topk-mean (default: the export's, else 3)")
    p.add_argument("--bscans", default=None, help="volumes: B-scans classified (all, central, central_k:K, every:N; "
                                                  "default: the training recipe's, in the export)")
    p.add_argument("--dicom-sr", type=Path, default=None, metavar="DIR",
                   help="volumes: write a DICOM Structured Report per source series into DIR")
    p.add_argument("--saliency", type=Path, default=None, metavar="DIR",
                   help="write a Grad-CAM overlay per classified B-scan into DIR (needs model.safetensors)")


CLI = VerticalCLI(
    tool="medkd", description=__doc__, group_name="patient", vertical="medkd.vertical:OCT",
    schema="medkd.config:OCTRecipe",
    run_help="train teacher, distilled student and no-KD baseline per patient-level fold, then report",
    run_example="medkd run pipelines/kd_oct_demo.yaml --out runs/demo", split=_split,
    audit_formats=["neh", "oct2017", "manifest", "volumes"],
    audit=Command("check a dataset: unreadable images, missing rows/files, duplicates, leaks", cmd_audit,
                  _audit_arguments),
    synth=Command("write a synthetic OCT dataset in the NEH layout", cmd_synth, _synth_arguments),
    predict=Command("classify B-scans (images, or OCT volumes: DICOM OPT, vendor exports) with an exported model; "
                    "writes a CSV", cmd_predict, _predict_arguments),
    predict_backends=["onnx", "onnx-int8", "torchscript", "torch"],
    export="medkd.export:export_run", sweep="medkd.sweep:adapter", export_formats="onnx,torchscript,bundle",
    export_help="export a trained student (ONNX, TorchScript, MONAI bundle; onnx-int8 on request) with parity checks",
    export_schema_option=True,
    sweep_example="medkd sweep pipelines/kd_oct_demo.yaml --space pipelines/spaces/kd_oct_demo.yaml --folds 0 "
                  "--trials 8 --out runs/sweep")


build_parser = partial(vertical_parser, CLI)
main = partial(run_main, build_parser)  # main(argv=None) -> exit status


if __name__ == "__main__":
    sys.exit(main())
