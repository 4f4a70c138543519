"""Export trained OCT students: ONNX, TorchScript and a MONAI bundle, verified, with a model card.

The skeleton (fold choice, parity, int8, completion marker) is :mod:`kdcore.export.run_export`'s; this module
declares what is OCT's: the sidecar contract, real B-scans for the checks, the MONAI bundle and the model card.

Each export folder::

    model.onnx  model.ts  model.safetensors  model.json (contract)  parity.json  MODEL_CARD.md  bundle/
    model.int8.onnx (with ``onnx-int8``; ``predict`` then uses it by default)

Example:
    >>> summary = export_run("runs/kd-oct-neh", formats={"onnx", "bundle"}, out_dir="exports/neh")  # doctest: +SKIP
    >>> summary["folds"][0]["parity"][0]["passed"]                                                  # doctest: +SKIP
    True
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from kdcore.errors import KDError
from kdcore.export import (ATOL, RTOL, check_parity, compare_outputs, pick_items, read_run_file, report_means,
                           run_data_root, run_items, run_source, RunModel, SIDECAR_FORMAT, SIDECAR_VERSION,
                           torch_runner, write_parity)
from kdcore.export import run_export
from kdcore.export.run_export import Exporter
from kdcore.images import ImageReadError, read_image
from kdcore.modelcard import (data_section, folds_section, latency_section, metrics_section, parity_section,
                              render_model_card, source_section)
from kdcore.seeding import derive_seed
from medkd.data.volumes import read_frame
from medkd.data_prep import item_files
from medkd.preprocess import preprocess

__all__ = ["export_run", "export_fold", "oct_contract", "parity_inputs", "OCTExporter", "OCT_EXPORTER", "FORMATS"]

FORMATS = ("onnx", "torchscript", "bundle", "onnx-int8")
PREFERRED_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "f1_macro", "auc", "macro_auc", "sensitivity",
                     "specificity", "kappa")


def oct_contract(entry: RunModel) -> dict[str, Any]:
    """The sidecar: everything an application needs to feed the model and read its output."""
    meta = entry.meta
    spec = dict(meta.get("input") or {})
    missing = [k for k in ("size", "mean", "std") if k not in spec] + ([] if meta.get("classes") else ["classes"])
    if missing:
        raise KDError(f"{entry.weights.with_suffix('.json')}: input contract incomplete, missing {missing}")
    if meta.get("task", "classification") != "classification":
        raise KDError(f"{entry.weights.with_suffix('.json')}: task {meta.get('task')!r} is not an OCT classifier")
    config = read_run_file(entry.run_dir, "config.yaml") or {}
    data_cfg = config.get("data", {}) if isinstance(config, dict) else {}
    spec.update(name="input", layout="NCHW", dtype="float32", channels=1, colour="gray", resize="letterbox",
                pad_value=spec.get("pad_value", 0),
                steps=["read as 8-bit greyscale", f"letterbox to {spec['size']}x{spec['size']}: scale the longer side "
                       f"to {spec['size']} (cv2.INTER_AREA when shrinking, cv2.INTER_LINEAR when enlarging, new sizes "
                       "rounded), centre on a zero canvas", "x / 255, then (x - mean) / std"])
    classes = list(meta["classes"])
    return {
        "format": SIDECAR_FORMAT, "format_version": SIDECAR_VERSION, "task": "classification",
        "domain": "retinal OCT B-scan",
        "arch": meta["arch"], "role": meta.get("role"), "fold": entry.fold, "manifest": meta.get("manifest"),
        "num_outputs": int(meta.get("num_outputs", len(classes))), "in_chans": int(meta.get("in_chans", 1)),
        "classes": classes, "data_format": data_cfg.get("format") if isinstance(data_cfg, dict) else None,
        "input": spec,
        "output": {"name": "output", "shape": ["batch", len(classes)], "meaning": "logits",
                   "probabilities": "softmax over axis 1", "classes": classes},
        "tta": {"hflip": "predict(tta=True): mean of the softmax of the input and of its horizontal mirror"},
        # the recipe's defaults for `medkd predict` on volume files (data.volume_aggregate, data.bscans)
        "volume": {"aggregate": data_cfg.get("volume_aggregate", "mean") if isinstance(data_cfg, dict) else "mean",
                   "topk": int(data_cfg.get("volume_topk", 3)) if isinstance(data_cfg, dict) else 3,
                   "bscans": data_cfg.get("bscans", "all") if isinstance(data_cfg, dict) else "all"},
        "source": run_source(entry),
        "exported": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "intended_use": "research only; not a medical device, not for diagnosis",
        "metrics": report_means(entry.run_dir, entry.name),
    }


def parity_inputs(entry: RunModel, contract: dict[str, Any], n: int = 8,
                  part: str = "test") -> tuple[np.ndarray, list[Path], str, str]:
    """Preprocessed inputs for the parity checks: real B-scans of the run (the fold's ``part`` patients first).

    Returns ``(inputs, image files, kind, note)``; falls back to synthetic images (kind ``"synthetic"``) only
    when the run's data cannot be read, and the note says why.
    """
    spec = contract["input"]
    root = run_data_root(entry.run_dir)
    items = run_items(entry.run_dir)
    manifest = read_run_file(entry.run_dir, "folds.json") or {}
    test = next((f.get(part) for f in manifest.get("folds", []) if f.get("fold") == entry.fold), None)
    arrays, files, skipped = [], [], []
    if root is not None and items:
        hashed = {} if all(item.get("path") for item in items) else item_files(entry.run_dir, root)
        for item in pick_items(items, 4 * n, groups=test):
            relative = item.get("path") or item.get("id")
            if not relative or len(arrays) >= n:
                continue
            file = hashed.get(str(item.get("id"))) or root / str(relative)
            try:
                scan = read_image(file, "gray") if item.get("frame") is None else \
                    read_frame(file, int(item["frame"]))  # a B-scan of a volume file
                arrays.append(preprocess(scan, int(spec["size"]), spec["mean"], spec["std"]))
                files.append(file)
            except ImageReadError as exc:
                skipped.append(f"{relative}: {exc.reason}")
    if arrays:
        note = f"{len(arrays)} B-scans of dataset.json" + (f" from the fold's {part} patients" if test else "")
        if skipped:
            note += f"; {len(skipped)} unreadable skipped ({skipped[0]})"
        return np.stack(arrays), files, "real", note
    why = ("config.yaml has no reachable data.root" if root is None else
           "dataset.json is missing or empty" if not items else "no listed image could be read")
    rng = np.random.default_rng(derive_seed("export-parity", entry.run_dir.name, entry.fold))
    synthetic = [rng.integers(0, 256, size=(300 + 40 * i, 400), dtype=np.uint8) for i in range(n)]
    return (np.stack([preprocess(a, int(spec["size"]), spec["mean"], spec["std"]) for a in synthetic]), [],
            "synthetic", f"synthetic noise images: {why}")


def _card(entry: RunModel, contract: dict[str, Any], result: dict[str, Any], bundle_note: str) -> str:
    source, classes = contract["source"], contract["classes"]
    report = read_run_file(entry.run_dir, "report.json")
    spec = contract["input"]
    summary = (f"A `{contract['arch']}` {entry.name} (fold {entry.fold} of run `{entry.run_dir.name}`) that classifies "
               f"one retinal OCT B-scan into {', '.join(classes)}. Input: greyscale, letterboxed to "
               f"{spec['size']}x{spec['size']}, `(x/255 - {spec['mean'][0]}) / {spec['std'][0]}`; output: logits "
               "(softmax gives probabilities). **Research use only: not a medical device, not for diagnosis.**")
    intended = "\n".join([
        "## Intended use and limits", "",
        "- For research on knowledge distillation and model compression for retinal OCT classification.",
        "- **Not a medical device.** Not for diagnosis, screening, triage or treatment decisions; it has not been "
        "validated prospectively, on other scanners, or on populations other than the training data's.",
        "- One B-scan at a time: a volume or a patient needs several scans and clinical context.",
        f"- It knows only {', '.join(classes)}: any other condition is forced into one of these classes.",
        "- Probabilities are softmax scores; see the calibration section before reading them as likelihoods.",
        "- Performance on images from other devices (the public datasets are Heidelberg Spectralis), other "
        "preprocessing, or of poor quality is unknown.",
    ])
    usage = "\n".join([
        "## How to use", "",
        "```python", "from medkd.predictor import OCTClassifier",
        "clf = OCTClassifier.load('.')        # this folder; ONNX Runtime by default",
        "clf.predict('bscan.jpeg')            # {class: probability}", "```", "",
        "Without kdvision: read the image as 8-bit greyscale, letterbox and normalise as `model.json` describes "
        "(`input.steps`), run `model.onnx` (input `input`, NCHW float32, dynamic batch) with ONNX Runtime, softmax "
        "the `output` logits. `bundle/` is a MONAI bundle of the same network." if bundle_note else
        "Without kdvision: read the image as 8-bit greyscale, letterbox and normalise as `model.json` describes "
        "(`input.steps`), run `model.onnx` with ONNX Runtime and softmax the logits.",
    ])
    sections = [source_section(source), data_section(entry.run_dir), folds_section(entry.run_dir, entry.fold),
                metrics_section(report, entry.name, PREFERRED_METRICS),
                parity_section(result["parity"], bundle_note), latency_section(result["latency"]), intended, usage]
    return render_model_card(f"Model card: OCT {entry.name} ({contract['arch']}), fold {entry.fold}", summary, sections)


def _export_bundle(model: Any, out_dir: Path, contract: dict[str, Any], inputs: np.ndarray, files: Sequence[Path],
                   schema: str | os.PathLike | None) -> dict[str, Any]:
    """Write and verify ``bundle/``; its TorchScript joins the parity checks, its preprocessing is compared."""
    from kdcore.export import torchscript_runner
    from medkd.bundle import bundle_preprocessing, verify_bundle, write_bundle

    bundle = write_bundle(out_dir / "bundle", model, contract, torchscript=out_dir / "model.ts",
                          onnx=out_dir / "model.onnx")
    bundled = {"bundle/models/model.ts": torchscript_runner(bundle / "models" / "model.ts")}
    checks = check_parity(torch_runner(model), bundled, inputs, classification=True,
                          inputs_kind="real" if files else "synthetic", raise_on_failure=False)
    extra: dict[str, Any] = {}
    if files:  # the bundle's own MONAI preprocessing against medkd.preprocess, on the same image files
        monai_pre = bundle_preprocessing(bundle)
        theirs = np.stack([monai_pre(f).numpy() for f in files])
        pre = compare_outputs(inputs[:len(files)], theirs, "bundle preprocessing (inputs)", classification=False,
                              atol=ATOL, rtol=0.0)
        reference = torch_runner(model)
        out = compare_outputs(reference(inputs[:len(files)]), reference(theirs), "bundle preprocessing (logits)",
                              classification=True, atol=ATOL, rtol=RTOL)
        checks += [pre, out]
        extra["bundle_preprocessing"] = "inference.json preprocessing compared with medkd.preprocess on the same files"
    write_parity(out_dir, checks, extra)
    for check in checks:
        check.raise_if_failed()
    verification = verify_bundle(bundle, schema)
    note = ("MONAI bundle checks: verify_net_in_out " + verification["verify_net_in_out"] + "; verify_metadata "
            + verification["verify_metadata"] + ".")
    return {"dir": "bundle", **verification, "note": note}


class OCTExporter(Exporter):
    formats = FORMATS
    classification = True
    extras = {"bundle": (_export_bundle, frozenset({"onnx", "torchscript"}))}

    def contract(self, entry: RunModel) -> dict[str, Any]:
        return oct_contract(entry)

    def parity_inputs(self, entry: RunModel, contract: dict[str, Any], n: int = 8,
                      part: str = "test") -> tuple[np.ndarray, list[Path], str, str]:
        return parity_inputs(entry, contract, n, part)

    def card(self, entry: RunModel, contract: dict[str, Any], result: dict[str, Any]) -> str:
        return _card(entry, contract, result, (result.get("bundle") or {}).get("note", ""))


OCT_EXPORTER = OCTExporter()


def export_fold(entry: RunModel, out_dir: str | os.PathLike, formats: Iterable[str] | str = ("onnx", "torchscript"),
                n_inputs: int = 8, schema: str | os.PathLike | None = None) -> dict[str, Any]:
    """Export one fold's model into ``out_dir`` (see :func:`export_run`)."""
    return run_export.export_fold(OCT_EXPORTER, entry, out_dir, formats, n_inputs, schema=schema)


def export_run(run_dir: str | os.PathLike, folds: int | Sequence[int] | str | None = None,
               formats: Iterable[str] | str = ("onnx", "torchscript"), out_dir: str | os.PathLike | None = None,
               model: str = "student", n_inputs: int = 8, schema: str | os.PathLike | None = None,
               int8_gate: float | None = None) -> dict[str, Any]:
    """Export a run's trained model (default the student); see :func:`kdcore.export.run_export.export_run`.

    ``formats``: any of ``"onnx"``, ``"torchscript"``, ``"bundle"`` (a MONAI bundle; implies the other two),
    ``"onnx-int8"`` (kept only when it keeps the float32 model's top-1 class on >= 99 % of the test patients'
    B-scans; ``int8_gate`` sets another share). ``schema``: a local copy of MONAI's metadata schema; when given,
    the bundle's metadata is validated.
    """
    if schema is not None and not Path(schema).is_file():
        raise KDError(f"--schema {schema}: file not found (a local copy of MONAI's meta_schema_20240725.json)")
    return run_export.export_run(OCT_EXPORTER, run_dir, folds, formats, out_dir, model, n_inputs, int8_gate,
                                 schema=schema)
