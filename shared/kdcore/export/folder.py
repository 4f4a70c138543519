"""One verified export folder: model.onnx / model.ts / model.safetensors, model.json, parity.json, latency."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import KDError
from .onnx import export_onnx
from .parity import ATOL, RTOL, check_parity, write_parity
from .runtime import machine_info, measure_latency_ms, onnx_runner, package_versions, torch_runner, torchscript_runner
from .sidecar import SIDECAR, write_sidecar
from .torchscript import export_torchscript

__all__ = ["export_model", "measure_export_latency", "parse_formats"]


def export_model(model: Any, inputs: np.ndarray, out_dir: str | os.PathLike, contract: Mapping[str, Any], *,
                 formats: Iterable[str], classification: bool, inputs_kind: str = "real", note: str = "",
                 weights: str | os.PathLike | None = None, atol: float = ATOL, rtol: float = RTOL) -> dict[str, Any]:
    """Export ``model`` into ``out_dir`` and verify it; writes model.onnx / model.ts, model.json, parity.json.

    Args:
        model: the PyTorch model (eval mode, CPU).
        inputs: preprocessed inputs (N, C, H, W) float32, exactly as the predictor feeds them.
        contract: the preprocessing contract and provenance, written as the sidecar.
        formats: any of ``"onnx"``, ``"torchscript"``.
        classification: also require identical argmax (logits) in the parity check.
        inputs_kind: ``"real"`` or ``"synthetic"`` (recorded with the check), ``note`` says why.
        weights: the run's safetensors file, copied as ``model.safetensors`` (for the PyTorch backend).

    Returns:
        ``{"files": [...], "onnx": {...}, "parity": [...], "latency": {...}}``. Raises :class:`KDError` naming the
        artefact and its numbers when a parity check fails (after writing parity.json).
    """
    import shutil

    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    formats = set(formats)
    unknown = formats - {"onnx", "torchscript"}
    if unknown:
        raise KDError(f"unknown export format(s) {sorted(unknown)} (known: onnx, torchscript)")
    model = model_on_cpu(model)
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    example = torch.from_numpy(inputs[:2] if len(inputs) >= 2 else np.concatenate([inputs, inputs]))
    contract = dict(contract)
    embedded = json.dumps(contract, sort_keys=True)
    files, summary, runners = [], {}, {}
    if weights is not None:
        shutil.copyfile(weights, out_dir / "model.safetensors")
        files.append("model.safetensors")
    if "onnx" in formats:
        summary["onnx"] = export_onnx(model, example, out_dir / "model.onnx", metadata={"kdvision_contract": embedded})
        runners["model.onnx"] = onnx_runner(out_dir / "model.onnx")
        files.append("model.onnx")
    if "torchscript" in formats:
        summary["torchscript"] = export_torchscript(model, example, out_dir / "model.ts", {SIDECAR: embedded})
        runners["model.ts"] = torchscript_runner(out_dir / "model.ts")
        files.append("model.ts")
    reference = torch_runner(model)
    checks = check_parity(reference, runners, inputs, classification=classification, inputs_kind=inputs_kind,
                          atol=atol, rtol=rtol, note=note, raise_on_failure=False)
    write_parity(out_dir, checks)
    for check in checks:
        check.raise_if_failed()
    latency = measure_export_latency(model, out_dir, inputs[:1], formats)
    contract.update(files={"onnx": "model.onnx" if "onnx" in formats else None,
                           "torchscript": "model.ts" if "torchscript" in formats else None,
                           "weights": "model.safetensors" if weights is not None else None},
                    export=summary, latency=latency, packages=package_versions())
    write_sidecar(out_dir / SIDECAR, contract)
    files.append(SIDECAR)
    return {"files": files, **summary, "parity": [c.to_dict() for c in checks], "latency": latency,
            "contract": contract}


def model_on_cpu(model: Any) -> Any:
    """``model`` itself when it is on the CPU, else a CPU copy (the caller's model stays on its GPU).

    Exports are traced with CPU inputs, checked against ONNX Runtime's CPU provider and timed on the CPU.
    """
    import copy

    import torch

    devices = {t.device.type for t in (*model.parameters(), *model.buffers())}
    if devices <= {"cpu"}:
        return model
    copied = copy.deepcopy(model)
    return copied.to(torch.device("cpu"))


def measure_export_latency(model: Any, out_dir: str | os.PathLike, one: np.ndarray,
                           formats: Iterable[str]) -> dict[str, Any]:
    """Batch-1 latency of the PyTorch model and the exported files, on one thread each.

    One thread: on shared or busy cores, multi-threaded timings swing by orders of magnitude (OpenMP
    workers wait for a core), while single-thread numbers are stable and comparable between machines.
    """
    import torch

    out_dir, formats = Path(out_dir), set(formats)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        latency: dict[str, Any] = {"batch": 1, "threads": 1, "input_shape": list(one.shape),
                                   "pytorch": measure_latency_ms(torch_runner(model), one)}
        if "onnx" in formats:
            latency["onnxruntime"] = measure_latency_ms(onnx_runner(out_dir / "model.onnx", threads=1), one)
        if "torchscript" in formats:
            latency["torchscript"] = measure_latency_ms(torchscript_runner(out_dir / "model.ts"), one)
    finally:
        torch.set_num_threads(previous)
    latency["machine"] = machine_info()
    return latency


def parse_formats(formats: Iterable[str] | str, allowed: Sequence[str]) -> set[str]:
    """``"onnx,torchscript"`` or a collection -> a set of format names, each one of ``allowed``."""
    wanted = {f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()}
    unknown = wanted - set(allowed)
    if unknown or not wanted:
        from ..errors import KDError

        raise KDError(f"--format {','.join(sorted(wanted)) or '(empty)'}: choose from {', '.join(allowed)}")
    return wanted
