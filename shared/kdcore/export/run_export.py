"""Exporting a run's trained model: the skeleton every vertical shares, with the vertical's :class:`Exporter`.

Fold choice: ``folds=None`` exports the fold whose model has the best validation score (``best_score`` of its
``model.json``; its direction from ``mode``); ``folds="all"`` every finished fold; an int or a list those. One fold
is written into ``out_dir`` itself, several into ``out_dir/fold_<k>/``. Each folder is verified (parity of every
format against the PyTorch model), carries the vertical's sidecar contract and model card, and is accepted by
``predict`` only once its completion marker is written, last.

Example:
    >>> summary = export_run(OCT_EXPORTER, "runs/demo", formats={"onnx"}, out_dir="exports/demo")  # doctest: +SKIP
    >>> summary["folds"][0]["parity"][0]["passed"]                                              # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..errors import KDError
from ..modelcard import write_model_card
from .folder import export_model, parse_formats
from .quantize import INT8_FILE, export_int8
from .run_models import RunModel, find_run_models, load_run_model, read_run_file, run_data_root, select_folds
from .sidecar import assert_no_absolute_paths, write_export_marker

__all__ = ["Exporter", "int8_bound", "export_fold", "export_run", "INT8_CALIBRATION", "INT8_HELD_OUT"]

INT8_CALIBRATION = 128   # training items that calibrate the int8 activations
INT8_HELD_OUT = 128      # test items that judge it against the float32 model


class Exporter:
    """What a vertical declares for export.

    Attributes:
        formats: every format it can write (``onnx``, ``torchscript``, ``onnx-int8`` and its own extras).
        classification: parity and int8 gates compare top-1 classes (True) or coordinates (False).
        extras: ``{format: write(model, out_dir, contract, inputs, files, **options) -> dict}`` for formats
            beyond ONNX and TorchScript (medkd's MONAI ``bundle``), with the base formats each one needs.
    """

    formats: tuple[str, ...] = ("onnx", "torchscript", "onnx-int8")
    classification: bool = True
    extras: dict[str, tuple[Callable[..., dict[str, Any]], frozenset[str]]] = {}

    def check_formats(self, formats: Iterable[str] | str) -> set[str]:
        return parse_formats(formats, self.formats)

    def contract(self, entry: RunModel) -> dict[str, Any]:
        """The sidecar: everything an application needs to feed the model and read its output."""
        raise NotImplementedError

    def parity_inputs(self, entry: RunModel, contract: dict[str, Any], n: int = 8,
                      part: str = "test") -> tuple[np.ndarray, list[Path], str, str]:
        """``(inputs, files, kind, note)``: preprocessed real items of the fold's ``part`` (kind ``real``), or
        synthetic ones only when the run's data cannot be read (kind ``synthetic``, the note says why)."""
        raise NotImplementedError

    def int8_nme(self, entry: RunModel, contract: dict[str, Any],
                 n: int) -> tuple[np.ndarray, Callable[[np.ndarray], float], str]:
        """Landmark models: held-out inputs, ``nme(outputs)`` against their ground truth, and a note."""
        raise KDError(f"{entry.run_dir}: onnx-int8 of a regression model needs the vertical's NME on held-out data")

    def card(self, entry: RunModel, contract: dict[str, Any], result: dict[str, Any]) -> str:
        """The model card (Markdown)."""
        raise NotImplementedError


def int8_bound(exporter: Exporter, int8_gate: float | None) -> dict[str, float]:
    """The int8 gate's bound as :func:`export_int8` takes it; ``None`` keeps the default (99 %, 0.1 NME points)."""
    if int8_gate is None:
        return {}
    if exporter.classification:
        if not 0 < int8_gate <= 1:
            raise KDError(f"--int8-gate {int8_gate}: a classifier's gate is the least top-1 agreement with float32, "
                          "a share in (0, 1], e.g. 0.99")
        return {"min_agreement": float(int8_gate)}
    if int8_gate < 0:
        raise KDError(f"--int8-gate {int8_gate}: a landmark model's gate is the most NME points int8 may add, >= 0")
    return {"max_nme_increase": float(int8_gate)}


def _export_int8(exporter: Exporter, entry: RunModel, contract: dict[str, Any], out_dir: Path,
                 bound: dict[str, float]) -> dict[str, Any]:
    """``model.int8.onnx``: calibrated on the fold's training items, gated on items of its test part."""
    calibration, _, kind, why = exporter.parity_inputs(entry, contract, INT8_CALIBRATION, part="train")
    if kind != "real":
        raise KDError(f"{entry.run_dir}: onnx-int8 needs the run's own data to calibrate the int8 model ({why})")
    if exporter.classification:
        held_out, _, held_kind, note = exporter.parity_inputs(entry, contract, INT8_HELD_OUT, part="test")
        if held_kind != "real":
            raise KDError(f"{entry.run_dir}: onnx-int8 needs the run's own data to check the int8 model ({note})")
        return export_int8(out_dir, calibration, held_out, classification=True, note=note, **bound)
    held_out, nme, note = exporter.int8_nme(entry, contract, INT8_HELD_OUT)
    return export_int8(out_dir, calibration, held_out, classification=False, nme=nme, note=note, **bound)


def export_fold(exporter: Exporter, entry: RunModel, out_dir: str | os.PathLike,
                formats: Iterable[str] | str = ("onnx", "torchscript"), n_inputs: int = 8,
                int8_gate: float | None = None, **options: Any) -> dict[str, Any]:
    """Export one fold's model into ``out_dir`` (see :func:`export_run`)."""
    formats = exporter.check_formats(formats)
    bound = int8_bound(exporter, int8_gate)  # a bad bound fails before any file is written
    out_dir = Path(out_dir)
    model = load_run_model(entry)
    contract = exporter.contract(entry)
    inputs, files, kind, note = exporter.parity_inputs(entry, contract, n_inputs)
    artefacts = formats - set(exporter.extras) - {"onnx-int8"}
    for name, (_, needs) in exporter.extras.items():
        if name in formats:
            artefacts |= needs
    if "onnx-int8" in formats:
        artefacts.add("onnx")  # the float32 ONNX model is what is quantized, and the int8 model's reference
    result = export_model(model, inputs, out_dir, contract, formats=artefacts, classification=exporter.classification,
                          inputs_kind=kind, note=note, weights=entry.weights)
    for name, (write, _) in exporter.extras.items():
        if name in formats:
            result[name] = write(model, out_dir, result["contract"], inputs, files, **options)
            result["parity"] = (read_run_file(out_dir, "parity.json") or {}).get("checks", result["parity"])
    if "onnx-int8" in formats:
        result["onnx_int8"] = _export_int8(exporter, entry, contract, out_dir, bound)
        result["latency"]["onnxruntime_int8"] = result["onnx_int8"]["latency"]["onnxruntime_int8"]
        result["parity"] = (read_run_file(out_dir, "parity.json") or {}).get("checks", result["parity"])
        result["files"].append(INT8_FILE)
    write_model_card(out_dir / "MODEL_CARD.md", exporter.card(entry, result["contract"], result))
    result["files"].append("MODEL_CARD.md")
    assert_no_absolute_paths(out_dir, extra=[p for p in (entry.run_dir.resolve(), run_data_root(entry.run_dir)) if p])
    write_export_marker(out_dir)  # last: predict accepts the folder only now
    result.pop("contract")
    return {"fold": entry.fold, "out_dir": str(out_dir), "inputs": kind, "inputs_note": note, **result}


def export_run(exporter: Exporter, run_dir: str | os.PathLike, folds: int | Sequence[int] | str | None = None,
               formats: Iterable[str] | str = ("onnx", "torchscript"), out_dir: str | os.PathLike | None = None,
               model: str = "student", n_inputs: int = 8, int8_gate: float | None = None,
               **options: Any) -> dict[str, Any]:
    """Export a run's finished model (default the student) with verified parity and a model card.

    Args:
        exporter: the vertical's :class:`Exporter`.
        run_dir: the run folder.
        folds: None (the fold with the best validation score), ``"all"``, a fold number or a list of them.
        formats: any of the exporter's formats (``onnx-int8``: static int8 ``model.int8.onnx`` calibrated on the
            fold's training items and kept only when it passes its gate against the float32 model).
        out_dir: default ``RUN/export/<model>``. One fold is written here, several into ``fold_<k>/``.
        model: which model of the run (``student``, ``teacher``, ``baseline``...).
        n_inputs: real items used for the parity checks.
        int8_gate: the int8 gate's bound instead of the default: the least top-1 agreement with float32
            (classifiers, default 0.99) or the most NME points int8 may add (landmarks, default 0.1). The bound
            used is recorded with the gate's numbers in ``model.json`` and ``parity.json``.
        options: passed to the exporter's extra formats (medkd's bundle: ``schema``).

    Returns:
        ``{"run", "model", "selected_by", "out_dir", "folds": [per-fold summaries with "parity" and "latency"]}``.
    """
    exporter.check_formats(formats)
    run_dir = Path(run_dir)
    models = find_run_models(run_dir, model)
    chosen = select_folds(models, folds)
    out = Path(out_dir) if out_dir is not None else run_dir / "export" / model
    results = [export_fold(exporter, models[k], out if len(chosen) == 1 else out / f"fold_{k}", formats, n_inputs,
                           int8_gate, **options) for k in chosen]
    selected = ("best validation score" if folds is None else "all folds" if folds == "all" else "requested")
    return {"run": run_dir.name, "model": model, "selected_by": selected, "out_dir": str(out), "folds": results}
