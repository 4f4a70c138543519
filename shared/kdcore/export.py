"""Export a trained network to ONNX and TorchScript, and prove the copies compute what the original does.

Exported files are checked on the spot: ONNX Runtime and TorchScript outputs are compared with the PyTorch
model's on the same inputs (:func:`check_parity`), at the full batch and one input at a time (the batch
dimension is dynamic). Every export folder carries a JSON sidecar (:data:`SIDECAR`) with the preprocessing
contract, so an application needs nothing from the training code. No absolute path of the exporting
machine may end up in an exported file (:func:`assert_no_absolute_paths`): the dynamo ONNX exporter stores
Python stack traces in node metadata, which :func:`export_onnx` removes.

PyTorch is imported lazily: the runners (:func:`onnx_runner`) work in applications without it.

Example:
    >>> import torch, timm                                                 # doctest: +SKIP
    >>> model = timm.create_model("test_efficientnet", num_classes=3).eval()  # doctest: +SKIP
    >>> export_onnx(model, torch.zeros(2, 3, 32, 32), "model.onnx")["exporter"]  # doctest: +SKIP
    'dynamo'
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import re
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .atomic import atomic_write_json
from .errors import KDError

__all__ = [
    # exporting and checking
    "SIDECAR", "ONNX_OPSET", "ATOL", "RTOL", "ParityCheck", "export_onnx", "export_torchscript", "compare_outputs",
    "check_parity", "write_parity", "export_model", "measure_latency_ms", "measure_export_latency", "machine_info",
    "package_versions", "write_sidecar", "read_sidecar", "find_absolute_paths", "assert_no_absolute_paths",
    # running exported files
    "onnx_runner", "torchscript_runner", "torch_runner", "resolve_export", "load_runner",
    # reading run folders
    "RunModel", "find_run_models", "lower_is_better", "select_folds", "load_run_model", "read_run_file", "run_source",
    "report_means", "run_data_root", "run_items", "pick_items",
]

SIDECAR = "model.json"  # beside model.onnx / model.ts / model.safetensors: Path(f).with_suffix(".json")
ONNX_OPSET = 18
ATOL = 1e-4   # parity: max |exported - pytorch| <= ATOL + RTOL * max |pytorch|
RTOL = 1e-4
EXPORT_PACKAGES = ("kdvision", "torch", "timm", "onnx", "onnxruntime", "onnxscript", "numpy",
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


# ------------------------------------------------------------------------------------------- exporters

def export_onnx(model: Any, example: Any, path: str | os.PathLike, opset: int = ONNX_OPSET,
                metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Write ``model`` as ONNX with a dynamic batch dimension, checked by ``onnx.checker``.

    Uses the dynamo exporter (torch's default and future); falls back to the TorchScript-based one when
    it fails, and says which in the returned info. Input and output are named ``input`` and ``output``.
    ``metadata`` is stored in the model's ``metadata_props`` (e.g. the preprocessing contract).
    """
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if example.shape[0] < 2:
        raise ValueError(f"export example needs a batch of at least 2 (a batch of 1 is specialised), "
                         f"got {tuple(example.shape)}")
    model = model.eval()
    tmp = path.with_name(f".{path.name}.tmp")
    exporter, fallback_reason = "dynamo", None
    try:
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), input_names=["input"], output_names=["output"],
                              opset_version=opset, dynamo=True, external_data=False, verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
    except Exception as exc:  # the dynamo exporter raises many error types; the legacy one is the fallback
        exporter, fallback_reason = "torchscript", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), input_names=["input"], output_names=["output"],
                              opset_version=opset, dynamo=False,
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    try:
        proto = onnx.load(str(tmp))
        _strip_onnx_debug_info(proto)
        for key, value in (metadata or {}).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "kdvision"
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise KDError(f"{path.name}: ONNX export is not a valid model: {exc}") from None
    opset_used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    info = {"file": path.name, "exporter": exporter, "opset": int(opset_used), "bytes": path.stat().st_size}
    if fallback_reason:
        info["dynamo_failure"] = fallback_reason
    return info


def _strip_onnx_debug_info(proto: Any) -> None:
    """Drop node metadata (stack traces with the exporting machine's file paths) and doc strings."""

    def clean(graph: Any) -> None:
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
            for attribute in node.attribute:
                if attribute.g is not None and attribute.HasField("g"):
                    clean(attribute.g)
                for sub in attribute.graphs:
                    clean(sub)
        for value in (*graph.input, *graph.output, *graph.value_info):
            del value.metadata_props[:]
            value.doc_string = ""
        del graph.metadata_props[:]
        graph.doc_string = ""

    clean(proto.graph)
    for function in proto.functions:
        for node in function.node:
            del node.metadata_props[:]
            node.doc_string = ""
        del function.metadata_props[:]
    del proto.metadata_props[:]
    proto.doc_string = ""


def export_torchscript(model: Any, example: Any, path: str | os.PathLike,
                       extra_files: Mapping[str, str | bytes] | None = None) -> dict[str, Any]:
    """Trace ``model`` with ``torch.jit.trace`` and save it (with ``extra_files`` inside the archive)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export, but TorchScript is still what C++/LibTorch,
        # MONAI bundles and mobile runtimes load.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), example, check_trace=False)
        files = {k: (v.encode() if isinstance(v, str) else v) for k, v in (extra_files or {}).items()}
        tmp = path.with_name(f".{path.name}.tmp")
        torch.jit.save(traced, str(tmp), _extra_files=files)
    os.replace(tmp, path)
    return {"file": path.name, "exporter": "torch.jit.trace", "bytes": path.stat().st_size}


# ------------------------------------------------------------------------------------------- runners

def onnx_runner(path: str | os.PathLike, threads: int | None = None) -> Runner:
    """``f(batch) -> outputs`` on ONNX Runtime's CPU provider (float32 numpy in and out)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise KDError(f"{path}: ONNX model not found")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise KDError(f"{path}: ONNX Runtime cannot load the model: {exc}") from None
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    return run


def torchscript_runner(path: str | os.PathLike, threads: int | None = None) -> Runner:
    import torch

    path = Path(path)
    if not path.is_file():
        raise KDError(f"{path}: TorchScript model not found")
    if threads:
        torch.set_num_threads(threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as exc:
            raise KDError(f"{path}: not a loadable TorchScript file: {str(exc).splitlines()[0]}") from None
    return torch_runner(module)


def torch_runner(model: Any) -> Runner:
    import torch

    model = model.eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).float().numpy()

    return run


# ------------------------------------------------------------------------------------------- parity

@dataclass
class ParityCheck:
    """How closely an exported artefact reproduces the PyTorch model on the same inputs."""

    artefact: str
    n_inputs: int
    inputs: str                 # "real" or "synthetic"
    max_abs_diff: float
    mean_abs_diff: float
    tolerance: float            # the bound max_abs_diff had to meet: atol + rtol * max |reference|
    atol: float
    rtol: float
    passed: bool
    argmax_agreement: float | None = None  # classification: share of inputs with the same top class
    argmax_near_ties: int | None = None    # disagreements where the reference's top-2 gap <= 2 * tolerance
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        text = (f"{self.artefact}: max |diff| {self.max_abs_diff:.3g}, mean {self.mean_abs_diff:.3g} on "
                f"{self.n_inputs} {self.inputs} inputs (tolerance {self.tolerance:.3g})")
        if self.argmax_agreement is not None:
            text += f", argmax agreement {self.argmax_agreement:.0%}"
        return text + (" - ok" if self.passed else " - FAILED")

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise KDError(f"parity check failed for {self.summary()}")


def compare_outputs(reference: np.ndarray, outputs: np.ndarray, artefact: str, *, classification: bool,
                    inputs: str = "real", atol: float = ATOL, rtol: float = RTOL, note: str = "") -> ParityCheck:
    """Compare an artefact's outputs with the reference's (same inputs, same order)."""
    reference = np.asarray(reference, dtype=np.float64)
    outputs = np.asarray(outputs, dtype=np.float64)
    if reference.shape != outputs.shape:
        raise KDError(f"{artefact}: output shape {outputs.shape} differs from PyTorch's {reference.shape}")
    diff = np.abs(outputs - reference)
    finite = bool(np.isfinite(outputs).all())
    tolerance = atol + rtol * float(np.abs(reference).max(initial=0.0))
    max_diff = float(diff.max(initial=0.0)) if finite else float("inf")
    passed = finite and max_diff <= tolerance
    agreement = ties = None
    if classification:
        same = outputs.argmax(axis=1) == reference.argmax(axis=1)
        ordered = np.sort(reference, axis=1)
        gap = ordered[:, -1] - ordered[:, -2] if reference.shape[1] > 1 else np.full(len(reference), np.inf)
        near = gap <= 2 * tolerance
        agreement, ties = float(same.mean()) if len(same) else 1.0, int((~same & near).sum())
        passed = passed and bool(same.all())  # strict; near ties are counted to explain a failure
    return ParityCheck(artefact, int(len(reference)), inputs, max_diff, float(diff.mean()) if finite else float("inf"),
                       tolerance, atol, rtol, passed, agreement, ties, note)


def check_parity(reference: Runner, artefacts: Mapping[str, Runner], inputs: np.ndarray, *, classification: bool,
                 inputs_kind: str = "real", atol: float = ATOL, rtol: float = RTOL, note: str = "",
                 raise_on_failure: bool = True) -> list[ParityCheck]:
    """Run every artefact on ``inputs`` as one batch and one input at a time; compare with ``reference``.

    Raises :class:`KDError` naming the artefact and the numbers when one fails (``raise_on_failure``).
    """
    expected = reference(inputs)
    checks = []
    for name, run in artefacts.items():
        batched = run(inputs)
        single = np.concatenate([run(inputs[i:i + 1]) for i in range(len(inputs))])
        worst = max((compare_outputs(expected, out, name, classification=classification, inputs=inputs_kind,
                                     atol=atol, rtol=rtol, note=note) for out in (batched, single)),
                    key=lambda c: (not c.passed, c.max_abs_diff))
        checks.append(worst)
    if raise_on_failure:
        for check in checks:
            check.raise_if_failed()
    return checks


# ------------------------------------------------------------------------------------------- latency

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


# ------------------------------------------------------------------------------------------- sidecar

def write_sidecar(path: str | os.PathLike, contract: Mapping[str, Any]) -> Path:
    """Write the preprocessing contract beside an exported model (``model.onnx`` -> ``model.json``)."""
    path = Path(path)
    target = path if path.suffix == ".json" else path.with_suffix(".json")
    atomic_write_json(target, dict(contract))
    return target


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    target = path if path.suffix == ".json" else path.with_suffix(".json")
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KDError(f"{target}: preprocessing sidecar of {path.name} not found (every export has one)") from None
    except ValueError as exc:
        raise KDError(f"{target}: invalid JSON: {exc}") from None
    if not isinstance(data, dict) or "input" not in data:
        raise KDError(f"{target}: not an export sidecar (no 'input' section)")
    return data


# ------------------------------------------------------------------------------------------- path hygiene

def find_absolute_paths(folder: str | os.PathLike, needles: Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """``(file, needle)`` for every file under ``folder`` whose bytes mention one of the ``needles`` folders.

    A needle counts when followed by ``/``, a quote, a space or a line end, so ``/work`` does not match
    ``/workspace``.
    """
    folder = Path(folder)
    roots = sorted({str(n).rstrip("/") for n in needles if len(str(n).rstrip("/")) >= 5}, key=len, reverse=True)
    hits = []
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = file.read_bytes()
        for root in roots:
            ends = ("/", '"', "'", " ", "\n", "\\")
            if any((root + end).encode() in data for end in ends) or data.endswith(root.encode()):
                hits.append((str(file.relative_to(folder)), root))
                break
    return hits


def assert_no_absolute_paths(folder: str | os.PathLike, extra: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse an export that mentions this machine's folders (home, Python prefix, working dir, ``extra``)."""
    folder = Path(folder)
    needles = [Path.home(), sys.prefix, sys.base_prefix, Path.cwd(), folder.resolve(), *extra]
    needles += [Path(p).resolve() for p in extra]
    needles += [p.resolve() for p in needles if isinstance(p, Path)]  # symlinked homes and folders
    hits = find_absolute_paths(folder, [n for n in needles if str(n) not in ("/", "")])
    if hits:
        listed = ", ".join(f"{file} contains {needle!r}" for file, needle in hits[:5])
        raise KDError(f"{folder}: exported files contain absolute paths of this machine: {listed}")


# ------------------------------------------------------------------------------------------- loading exports

_BACKEND_FILES = {"onnx": "model.onnx", "torchscript": "model.ts", "torch": "model.safetensors"}
_SUFFIX_BACKEND = {".onnx": "onnx", ".ts": "torchscript", ".pt": "torchscript", ".safetensors": "torch"}


def resolve_export(path: str | os.PathLike, backend: str | None) -> tuple[Path, Path, str]:
    """``(model file, sidecar, backend)`` for an export folder or a model file with its sidecar."""
    path = Path(path)
    if path.is_dir():
        backend = backend or "onnx"
        if backend not in _BACKEND_FILES:
            raise KDError(f"backend {backend!r}: expected one of {', '.join(_BACKEND_FILES)}")
        model_file, sidecar = path / _BACKEND_FILES[backend], path / SIDECAR
    elif path.is_file():
        inferred = _SUFFIX_BACKEND.get(path.suffix)
        if inferred is None:
            raise KDError(f"{path}: not an exported model (.onnx, .ts or .safetensors expected)")
        if backend is not None and backend != inferred:
            raise KDError(f"{path}: a {inferred} file cannot run on backend {backend!r}")
        model_file, sidecar, backend = path, path.with_suffix(".json"), inferred
    else:
        raise KDError(f"{path}: export folder or model file not found")
    for needed in (sidecar, model_file):
        if not needed.is_file():
            raise KDError(f"{needed}: missing from the export ({needed.name} is required for backend {backend!r})")
    return model_file, sidecar, backend


def _eager_runner(weights: Path, contract: Mapping[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """Eager PyTorch: the timm architecture named in the sidecar with the exported weights."""
    from .checkpoint import load_weights
    from .models import create_model

    model = create_model(contract["arch"], int(contract["num_outputs"]), pretrained=False,
                         in_chans=int(contract.get("in_chans", 3)))
    model.load_state_dict(load_weights(weights))
    return torch_runner(model)


def load_runner(path: str | os.PathLike, backend: str | None = None,
                threads: int | None = None) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any], str, Path]:
    """The model function, its contract, the backend and the model file of an export."""
    model_file, sidecar, backend = resolve_export(path, backend)
    contract = read_sidecar(sidecar)
    if backend == "onnx":
        run = onnx_runner(model_file, threads)
    elif backend == "torchscript":
        run = torchscript_runner(model_file, threads)
    else:
        run = _eager_runner(model_file, contract)
    return run, contract, backend, model_file


# ------------------------------------------------------------------------------------------- run folders

@dataclass
class RunModel:
    """One trained model of a run: ``RUN/folds/fold_<k>/<name>/model.safetensors`` and its ``model.json``."""

    run_dir: Path
    fold: int
    name: str
    weights: Path
    meta: dict[str, Any]


def find_run_models(run_dir: str | os.PathLike, model: str = "student") -> dict[int, RunModel]:
    """Every fold of ``run_dir`` holding final weights of ``model`` (fold -> :class:`RunModel`)."""
    from .checkpoint import read_meta

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise KDError(f"{run_dir}: not a run folder (no config.yaml)")
    found = {}
    for weights in sorted(run_dir.glob(f"folds/fold_*/{model}/model.safetensors")):
        try:
            fold = int(weights.parent.parent.name.split("_", 1)[1])
        except ValueError:
            continue
        found[fold] = RunModel(run_dir, fold, model, weights, read_meta(weights))
    if not found:
        names = sorted({p.name for p in run_dir.glob("folds/fold_*/*") if p.is_dir()})
        raise KDError(f"{run_dir}: no trained {model!r} weights (folds/fold_<k>/{model}/model.safetensors)"
                      + (f"; models present: {', '.join(names)}" if names else ""))
    return found


def lower_is_better(monitor: str | None, mode: str | None = None) -> bool:
    """Whether a smaller ``monitor`` value is better (losses and errors) unless ``mode`` says so.

    Example:
        >>> lower_is_better("val_loss"), lower_is_better("nme"), lower_is_better("balanced_accuracy")
        (True, True, False)
    """
    if mode in ("min", "max"):
        return mode == "min"
    words = set(re.split(r"[^a-z0-9]+", (monitor or "").lower()))
    return bool(words & {"loss", "nme", "error", "fr", "ece", "brier", "mae", "mse", "rmse"})


def select_folds(models: Mapping[int, RunModel], folds: int | Sequence[int] | str | None) -> list[int]:
    """``"all"`` -> every fold; an int or list -> those (checked); None -> the fold whose model has the best
    validation score (``best_score`` of ``model.json``, direction from ``monitor``)."""
    available = sorted(models)
    if folds == "all":
        return available
    if folds is None:
        scored = [k for k in available if isinstance(models[k].meta.get("best_score"), (int, float))]
        if not scored:
            raise KDError(f"no fold has a best_score in model.json to choose from (folds {available}); "
                          "choose a fold explicitly")
        meta = models[scored[0]].meta
        sign = 1.0 if lower_is_better(meta.get("monitor"), meta.get("monitor_mode", meta.get("mode"))) else -1.0
        return [min(scored, key=lambda k: (sign * models[k].meta["best_score"], k))]
    wanted = [folds] if isinstance(folds, int) else list(folds)
    missing = [k for k in wanted if k not in models]
    if missing:
        name = next(iter(models.values())).name
        raise KDError(f"fold(s) {missing} have no trained {name!r} (available: {available})")
    return sorted(set(wanted))


def load_run_model(entry: RunModel) -> Any:
    """Rebuild the architecture from ``model.json`` and load the weights (no hub access, CPU, eval mode)."""
    from .checkpoint import load_weights
    from .models import create_model

    meta = entry.meta
    missing = [k for k in ("arch", "num_outputs") if k not in meta]
    if missing:
        raise KDError(f"{entry.weights.with_suffix('.json')}: missing keys {missing}")
    model = create_model(meta["arch"], int(meta["num_outputs"]), pretrained=False,
                         in_chans=int(meta.get("in_chans", 3)))
    result = model.load_state_dict(load_weights(entry.weights), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise KDError(f"{entry.weights}: weights do not fit {meta['arch']!r} (missing {list(result.missing_keys)[:5]}, "
                      f"unexpected {list(result.unexpected_keys)[:5]})")
    return model.eval()


def read_run_file(run_dir: str | os.PathLike, name: str) -> Any:
    """A JSON or YAML file of the run, or None when it is absent."""
    path = Path(run_dir) / name
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except ValueError as exc:
        raise KDError(f"{path}: unreadable ({exc})") from None


def run_source(entry: RunModel) -> dict[str, Any]:
    """Where an exported model comes from: recipe, run folder name, fold, manifest, commit (no paths)."""
    config = read_run_file(entry.run_dir, "config.yaml") or {}
    env = read_run_file(entry.run_dir, "environment.json") or {}
    git = env.get("git") or {}
    meta = entry.meta
    return {
        "recipe": meta.get("recipe") or config.get("name") or config.get("recipe") or entry.run_dir.name,
        "run": entry.run_dir.name, "fold": entry.fold, "model": entry.name, "role": meta.get("role"),
        "manifest": meta.get("manifest"), "git_commit": git.get("commit"), "git_dirty": git.get("dirty"),
        "kept": meta.get("kept"), "best_epoch": meta.get("best_epoch"), "best_score": meta.get("best_score"),
        "monitor": meta.get("monitor"), "epochs_run": meta.get("epochs_run"), "seed": env.get("seed"),
    }


def report_means(run_dir: str | os.PathLike, model: str) -> dict[str, float]:
    """``metric -> mean`` of ``report.json``'s ``models.<model>.summary`` ({} without a report)."""
    report = read_run_file(run_dir, "report.json") or {}
    summary = ((report.get("models") or {}).get(model) or {}).get("summary") or {}
    return {name: value["mean"] for name, value in summary.items()
            if isinstance(value, Mapping) and isinstance(value.get("mean"), (int, float))}


def run_data_root(run_dir: str | os.PathLike) -> Path | None:
    """The run's data folder: ``data.root`` of its config (relative roots are tried from the working
    directory, the run folder and its parent), else ``RUN/data`` (synthetic data generated in the run)."""
    run_dir = Path(run_dir)
    config = read_run_file(run_dir, "config.yaml") or {}
    data = config.get("data") if isinstance(config, dict) else None
    root = data.get("root") if isinstance(data, dict) else None
    if not root:
        return run_dir / "data" if (run_dir / "data").is_dir() else None
    root = Path(str(root)).expanduser()
    candidates = [root] if root.is_absolute() else [Path.cwd() / root, run_dir / root, run_dir.parent / root]
    return next((c for c in candidates if c.is_dir()), None)


def run_items(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The items of ``dataset.json`` (a list, or a mapping with ``items``); [] when absent."""
    data = read_run_file(run_dir, "dataset.json")
    if data is None:
        return []
    items = data.get("items", data.get("records")) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise KDError(f"{Path(run_dir) / 'dataset.json'}: expected a list of items (or {{'items': [...]}})")
    return [item for item in items if isinstance(item, dict)]


def pick_items(items: Sequence[dict[str, Any]], n: int, groups: Iterable[str] | None = None,
               group_key: str = "patient", label_key: str = "label") -> list[dict[str, Any]]:
    """Up to ``n`` items, from ``groups`` (e.g. the fold's test patients) when given, spread over labels."""
    pool = list(items)
    if groups is not None:
        wanted = set(map(str, groups))
        preferred = [item for item in pool if str(item.get(group_key)) in wanted]
        pool = preferred or pool
    by_label: dict[str, list[dict[str, Any]]] = {}
    for item in sorted(pool, key=lambda i: str(i.get("id", i.get("path", "")))):
        by_label.setdefault(str(item.get(label_key)), []).append(item)
    picked: list[dict[str, Any]] = []
    queues = [by_label[k] for k in sorted(by_label)]
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    return picked


# ------------------------------------------------------------------------------------------- one export

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


def write_parity(out_dir: str | os.PathLike, checks: Sequence[ParityCheck],
                 extra: Mapping[str, Any] | None = None) -> Path:
    """``parity.json``: the rule, and each artefact's numbers (merged with checks already in the file)."""
    path = Path(out_dir) / "parity.json"
    existing = read_run_file(out_dir, "parity.json") or {}
    entries = {c["artefact"]: c for c in existing.get("checks", [])}
    entries.update({c.artefact: c.to_dict() for c in checks})
    data = {"rule": "max |exported - pytorch| <= atol + rtol * max |pytorch| on the same inputs, at the full batch "
                    "and one input at a time (the worse is kept); classification also needs the same argmax "
                    "for every input",
            "passed": all(c["passed"] for c in entries.values()), "checks": list(entries.values())}
    merged = {**existing.get("extra", {}), **(extra or {})}
    if merged:
        data["extra"] = merged
    atomic_write_json(path, data)
    return path
