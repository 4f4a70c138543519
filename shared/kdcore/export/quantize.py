"""int8 students: ONNX Runtime static quantization (QDQ), calibrated on the run's training images, gated.

The exported float32 ``model.onnx`` is quantized with :func:`onnxruntime.quantization.quantize_static`
(QDQ format, signed int8 weights per channel, unsigned 8-bit activations, MinMax calibration) into
``model.int8.onnx``. Unsigned activations (U8S8) because ONNX Runtime's x86 kernels multiply u8 by s8: with
signed activations (S8S8) the EfficientNet-B2 student ran about 4x slower than float32 on this AVX2 CPU,
with U8S8 about as fast (development measurement under heavy load; P5 in docs/performance.md).
The gate compares the int8 model with the float32 model on held-out images: classifiers must keep the top-1
class of at least ``min_agreement`` (99 %) of them; landmark models may add at most ``max_nme_increase``
(0.1) NME points. A model that fails is not kept: the gate raises after writing its numbers to parity.json.

Example:
    >>> info = export_int8("exports/oct", calibration, held_out, classification=True)  # doctest: +SKIP
    >>> info["check"]["argmax_agreement"] >= 0.99                                      # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import KDError
from .parity import top_two_gap, write_parity
from .runtime import measure_latency_ms, onnx_runner
from .sidecar import SIDECAR, read_sidecar, write_sidecar

__all__ = ["INT8_FILE", "MIN_AGREEMENT", "MAX_NME_INCREASE", "Int8Check", "quantize_int8", "int8_gate",
           "export_int8"]

INT8_FILE = "model.int8.onnx"
MIN_AGREEMENT = 0.99
MAX_NME_INCREASE = 0.1   # NME points (percent of the normaliser)


@dataclass
class Int8Check:
    """The int8 model against the float32 ONNX model on the same held-out inputs."""

    artefact: str
    n_inputs: int
    inputs: str
    passed: bool
    rule: str
    max_abs_diff: float
    mean_abs_diff: float
    argmax_agreement: float | None = None   # classification
    changed: int | None = None              # inputs whose top-1 class changed
    changed_margins: list[float] | None = None  # float32's top-two gap on each of them, smallest first
    median_margin: float | None = None      # float32's top-two gap over all inputs, for comparison
    min_agreement: float | None = None      # the bound used (classification)
    max_nme_increase: float | None = None   # the bound used (landmarks)
    nme_fp32: float | None = None           # landmarks, in NME points
    nme_int8: float | None = None
    nme_increase: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.argmax_agreement is not None:
            text = f"top-1 agreement with float32 {self.argmax_agreement:.1%} on {self.n_inputs} {self.inputs} inputs"
            if self.changed:
                # Why a class changed: an input the float32 model barely decides flips under any 8-bit rounding.
                gaps = ", ".join(f"{g:.3g}" for g in self.changed_margins[:8])
                text += (f"; {self.changed} changed class, where float32's top two outputs were {gaps} apart "
                         f"(median over all inputs {self.median_margin:.3g})")
        else:
            text = (f"NME {self.nme_int8:.3f} vs float32 {self.nme_fp32:.3f} (+{self.nme_increase:.3f} points) on "
                    f"{self.n_inputs} {self.inputs} inputs")
        return f"{self.artefact}: {text} ({self.rule}) - {'ok' if self.passed else 'FAILED'}"

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise KDError(f"int8 parity gate failed for {self.summary()}; the int8 model was not kept")


def quantize_int8(fp32: str | os.PathLike, out: str | os.PathLike, calibration: np.ndarray) -> dict[str, Any]:
    """Quantize ``fp32`` (ONNX) into ``out`` with static QDQ int8, calibrated on ``calibration`` (N, C, H, W)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    fp32, out = Path(fp32), Path(out)
    if len(calibration) == 0:
        raise KDError(f"{out.name}: no calibration images (the run's training images could not be read)")
    class Reader(CalibrationDataReader):
        """One preprocessed training image per call, as ONNX Runtime's calibrators read them."""

        def __init__(self, inputs: np.ndarray):
            self._items = iter([{"input": np.ascontiguousarray(x[None], dtype=np.float32)} for x in inputs])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._items, None)

    reader = Reader(calibration)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".int8.") as tmp:
        prepared, result = Path(tmp) / "prepared.onnx", Path(tmp) / out.name
        with contextlib.redirect_stdout(io.StringIO()):
            # Shape inference and graph optimisation first, as ONNX Runtime's quantization guide advises.
            quant_pre_process(str(fp32), str(prepared))
            quantize_static(str(prepared), str(result), reader, quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            calibrate_method=CalibrationMethod.MinMax)
        os.replace(result, out)
    return {"file": out.name, "format": "QDQ", "weights": "int8 per channel", "activations": "uint8 per tensor",
            "calibration": "MinMax", "calibration_images": int(len(calibration)), "bytes": out.stat().st_size,
            "fp32_bytes": fp32.stat().st_size}


def int8_gate(reference: np.ndarray, outputs: np.ndarray, *, classification: bool, inputs: str = "real",
              nme: Callable[[np.ndarray], float] | None = None, min_agreement: float = MIN_AGREEMENT,
              max_nme_increase: float = MAX_NME_INCREASE, note: str = "") -> Int8Check:
    """Judge int8 ``outputs`` against the float32 model's ``reference`` on the same inputs.

    Classification: share of inputs whose top-1 class is unchanged, at least ``min_agreement``. Landmarks:
    ``nme(outputs) - nme(reference)`` (``nme`` maps outputs to NME points against the ground truth), at most
    ``max_nme_increase``.

    Example:
        >>> ref = np.eye(3)[[0, 1, 2, 0]]
        >>> int8_gate(ref, ref + 0.01, classification=True).passed
        True
        >>> check = int8_gate(ref, ref[[1, 1, 2, 0]], classification=True)
        >>> check.argmax_agreement, check.changed, check.changed_margins
        (0.75, 1, [1.0])
    """
    reference = np.asarray(reference, dtype=np.float64)
    outputs = np.asarray(outputs, dtype=np.float64)
    if reference.shape != outputs.shape:
        raise KDError(f"{INT8_FILE}: output shape {outputs.shape} differs from float32's {reference.shape}")
    diff = np.abs(outputs - reference)
    finite = bool(np.isfinite(outputs).all())
    common = dict(artefact=INT8_FILE, n_inputs=int(len(reference)), inputs=inputs,
                  max_abs_diff=float(diff.max(initial=0.0)) if finite else float("inf"),
                  mean_abs_diff=float(diff.mean()) if finite and diff.size else float("inf"), note=note)
    if classification:
        same = outputs.argmax(1) == reference.argmax(1)
        agreement = float(same.mean()) if len(reference) else 0.0
        gap = top_two_gap(reference)
        return Int8Check(passed=finite and agreement >= min_agreement, argmax_agreement=agreement,
                         changed=int((~same).sum()), changed_margins=sorted(float(g) for g in gap[~same]),
                         median_margin=float(np.median(gap)) if len(gap) else None, min_agreement=min_agreement,
                         rule=f"top-1 agreement with the float32 model >= {min_agreement:.3g}", **common)
    if nme is None:
        raise ValueError("a landmark model's int8 gate needs nme(outputs)")
    before, after = float(nme(reference)), float(nme(outputs)) if finite else float("inf")
    return Int8Check(passed=finite and after - before <= max_nme_increase, nme_fp32=before, nme_int8=after,
                     nme_increase=after - before, max_nme_increase=max_nme_increase,
                     rule=f"NME increase <= {max_nme_increase:g} points", **common)


def export_int8(out_dir: str | os.PathLike, calibration: np.ndarray, held_out: np.ndarray, *, classification: bool,
                inputs_kind: str = "real", note: str = "", nme: Callable[[np.ndarray], float] | None = None,
                min_agreement: float = MIN_AGREEMENT, max_nme_increase: float = MAX_NME_INCREASE,
                latency_runs: int = 20) -> dict[str, Any]:
    """Quantize ``out_dir/model.onnx`` into ``model.int8.onnx``, gate it, time it, and record it in the sidecar.

    ``calibration``: preprocessed training images; ``held_out``: preprocessed images the model was not trained
    on. On a failed gate the int8 file is removed and :class:`KDError` raised (parity.json keeps the numbers).
    """
    out_dir = Path(out_dir)
    fp32, int8 = out_dir / "model.onnx", out_dir / INT8_FILE
    if not fp32.is_file():
        raise KDError(f"{fp32}: onnx-int8 needs the float32 ONNX export first")
    info = quantize_int8(fp32, int8, calibration)
    reference = onnx_runner(fp32)(held_out)
    int8_run = onnx_runner(int8)
    outputs = np.concatenate([int8_run(held_out[i:i + 16]) for i in range(0, len(held_out), 16)])
    check = int8_gate(reference, outputs, classification=classification, inputs=inputs_kind, nme=nme, note=note,
                      min_agreement=min_agreement, max_nme_increase=max_nme_increase)
    write_parity(out_dir, [check])
    if not check.passed:
        int8.unlink(missing_ok=True)
        check.raise_if_failed()
    one = np.ascontiguousarray(held_out[:1], dtype=np.float32)
    latency = {"batch": 1, "threads": 1,
               "onnxruntime": measure_latency_ms(onnx_runner(fp32, threads=1), one, runs=latency_runs),
               "onnxruntime_int8": measure_latency_ms(onnx_runner(int8, threads=1), one, runs=latency_runs)}
    latency["int8_over_fp32"] = latency["onnxruntime_int8"]["median_ms"] / latency["onnxruntime"]["median_ms"]
    sidecar = out_dir / SIDECAR
    if sidecar.is_file():
        contract = read_sidecar(sidecar)
        contract.setdefault("files", {})["onnx_int8"] = INT8_FILE
        contract.setdefault("export", {})["onnx_int8"] = {**info, "gate": check.to_dict()}
        contract.setdefault("latency", {})["onnxruntime_int8"] = latency["onnxruntime_int8"]
        write_sidecar(sidecar, contract)
    return {**info, "check": check.to_dict(), "latency": latency}
