"""Running exported models: ONNX Runtime, TorchScript and eager PyTorch as ``f(batch) -> outputs``; latency.

PyTorch is imported lazily: the ONNX runner works in applications without it.

Example:
    >>> run, contract, backend, _ = load_runner("exports/oct-student")  # doctest: +SKIP
    >>> run(np.zeros((1, 1, 224, 224), np.float32)).shape                # doctest: +SKIP
    (1, 4)
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ..errors import KDError
from .sidecar import COMPLETE_MARKER, SIDECAR, check_export_complete, read_sidecar

__all__ = ["Runner", "onnx_runner", "torchscript_runner", "torch_runner", "resolve_export", "load_runner",
           "measure_latency_ms", "machine_info", "package_versions", "EXPORT_PACKAGES", "parse_device"]

EXPORT_PACKAGES = ("kdvision", "torch", "timm", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "numpy",
                   "opencv-python-headless", "monai", "safetensors")

Runner = Callable[[np.ndarray], np.ndarray]


def package_versions(names: Iterable[str] = EXPORT_PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def parse_device(device: str) -> tuple[str, int]:
    """``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` -> ``(kind, index)``; anything else names ``--device``."""
    kind, _, index = str(device).partition(":")
    if kind not in ("auto", "cpu", "cuda") or (index and (kind != "cuda" or not index.isdigit())):
        raise KDError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    return kind, int(index or 0)


def _onnx_providers(device: str, available: list[str]) -> list:
    kind, index = parse_device(device)
    has_cuda = "CUDAExecutionProvider" in available
    if kind == "cuda" and not has_cuda:
        raise KDError(f"--device {device}: this ONNX Runtime has no CUDAExecutionProvider (providers: "
                      f"{', '.join(available)}); install onnxruntime-gpu instead of onnxruntime, or use --device cpu")
    if kind == "cuda" or (kind == "auto" and has_cuda):
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def onnx_runner(path: str | os.PathLike, threads: int | None = None, device: str = "cpu") -> Runner:
    """``f(batch) -> outputs`` on ONNX Runtime (float32 numpy in and out).

    ``device``: ``cpu``; ``cuda``/``cuda:N`` (onnxruntime-gpu's CUDA provider, an error without it); ``auto``
    (CUDA when the provider is there, else CPU).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise KDError(f"{path}: ONNX model not found")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    providers = _onnx_providers(device, ort.get_available_providers())
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise KDError(f"{path}: ONNX Runtime cannot load the model: {exc}") from None
    if providers[0] != "CPUExecutionProvider" and session.get_providers()[0] != "CUDAExecutionProvider":
        # ONNX Runtime falls back to the CPU when the CUDA libraries fail to load; a GPU was asked for.
        raise KDError(f"{path}: ONNX Runtime could not start its CUDA provider (CUDA/cuDNN libraries missing or "
                      f"mismatched); providers in use: {', '.join(session.get_providers())}")
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    return run


def _torch_device(device: str):
    import torch

    kind, index = parse_device(device)
    if kind == "cuda" and not torch.cuda.is_available():
        raise KDError(f"--device {device}: CUDA is not available to PyTorch on this machine")
    if kind == "cuda" or (kind == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", index)
    return torch.device("cpu")


def torchscript_runner(path: str | os.PathLike, threads: int | None = None, device: str = "cpu") -> Runner:
    import torch

    path = Path(path)
    if not path.is_file():
        raise KDError(f"{path}: TorchScript model not found")
    if threads:
        torch.set_num_threads(threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = torch.jit.load(str(path), map_location=_torch_device(device)).eval()
        except RuntimeError as exc:
            raise KDError(f"{path}: not a loadable TorchScript file: {str(exc).splitlines()[0]}") from None
    return torch_runner(module, device)


def torch_runner(model: Any, device: str | None = None) -> Runner:
    """``f(batch) -> outputs`` of a PyTorch module; ``device`` moves it there (None: where it is)."""
    import torch

    model = model.eval()
    if device is not None:
        model = model.to(_torch_device(device))
    target = next((p.device for p in model.parameters()), torch.device("cpu"))

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            inputs = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(target)
            return model(inputs).float().cpu().numpy()

    return run


def measure_latency_ms(run: Runner, example: np.ndarray, warmup: int = 3, runs: int = 20) -> dict[str, float]:
    """Median and quartiles of the wall time (ms) of ``run(example)`` after warm-up."""
    for _ in range(warmup):
        run(example)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(example)
        times.append((time.perf_counter() - start) * 1000.0)
    quartiles = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_ms": round(statistics.median(times), 3), "p25_ms": round(quartiles[0], 3),
            "p75_ms": round(quartiles[2], 3), "runs": runs}


def machine_info() -> dict[str, Any]:
    """What a latency number depends on: processor, core count, thread settings."""
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                            "processor": _processor_name(), "python": sys.version.split()[0]}
    with contextlib.suppress(ImportError):
        import torch

        info["torch_threads"] = torch.get_num_threads()
    return info


def _processor_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


_BACKEND_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx", "torchscript": "model.ts",
                  "torch": "model.safetensors"}
_SUFFIX_BACKEND = {".onnx": "onnx", ".ts": "torchscript", ".pt": "torchscript", ".safetensors": "torch"}


def resolve_export(path: str | os.PathLike, backend: str | None) -> tuple[Path, Path, str]:
    """``(model file, sidecar, backend)`` for an export folder or a model file with its sidecar."""
    path = Path(path)
    if path.is_dir():
        # An int8 model is only kept when it passed its parity gate (kdcore.export.quantize), so it is preferred.
        backend = backend or ("onnx-int8" if (path / _BACKEND_FILES["onnx-int8"]).is_file() else "onnx")
        if backend not in _BACKEND_FILES:
            raise KDError(f"backend {backend!r}: expected one of {', '.join(_BACKEND_FILES)}")
        model_file, sidecar = path / _BACKEND_FILES[backend], path / SIDECAR
    elif path.is_file():
        int8 = path.name.endswith(".int8.onnx")
        inferred = "onnx-int8" if int8 else _SUFFIX_BACKEND.get(path.suffix)
        if inferred is None:
            raise KDError(f"{path}: not an exported model (.onnx, .ts or .safetensors expected)")
        if backend is not None and backend != inferred:
            raise KDError(f"{path}: a {inferred} file cannot run on backend {backend!r}")
        sidecar = path.with_name(path.name[:-len(".int8.onnx")] + ".json") if int8 else path.with_suffix(".json")
        model_file, backend = path, inferred
    else:
        raise KDError(f"{path}: export folder or model file not found")
    for needed in (sidecar, model_file):
        if not needed.is_file():
            raise KDError(f"{needed}: missing from the export ({needed.name} is required for backend {backend!r})")
    return model_file, sidecar, backend


def _eager_runner(weights: Path, contract: Mapping[str, Any], device: str = "cpu") -> Runner:
    """Eager PyTorch: the timm architecture named in the sidecar with the exported weights."""
    from ..checkpoint import check_bound_meta, load_weights
    from ..models import build_model

    check_bound_meta(weights, dict(contract))
    model = build_model(contract)
    model.load_state_dict(load_weights(weights))
    return torch_runner(model, device)


def load_runner(path: str | os.PathLike, backend: str | None = None, threads: int | None = None,
                device: str = "cpu") -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any], str, Path]:
    """The model function, its contract, the backend and the model file of an export, running on ``device``."""
    parse_device(device)
    model_file, sidecar, backend = resolve_export(path, backend)
    contract = read_sidecar(sidecar)  # first, so a malformed sidecar is named for what is wrong with it
    if Path(path).is_dir() or (model_file.parent / COMPLETE_MARKER).exists():
        # A model file copied out with its sidecar alone has no marker to check; an export folder must have one.
        check_export_complete(model_file.parent, [sidecar.name, model_file.name])
    if backend in ("onnx", "onnx-int8"):
        run = onnx_runner(model_file, threads, device)
    elif backend == "torchscript":
        run = torchscript_runner(model_file, threads, device)
    else:
        run = _eager_runner(model_file, contract, device)
    return run, contract, backend, model_file
