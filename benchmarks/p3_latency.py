"""P3: batch-1 latency of each teacher and its student in the same runtime (deployment view).

Models come from the paper recipes (``kd_oct_neh.yaml``, ``face_kd_300w.yaml``) with random weights
(``pretrained=False``; weights do not change the speed). Runtimes, each applied identically to teacher and
student:

- ``eager``: ``model.eval()``, ``torch.inference_mode()``, fp32, contiguous (the headline figure);
- ``eager_channels_last``: the same with model and input in channels_last;
- ``torchscript_frozen``: model in channels_last, ``torch.jit.trace``, then ``torch.jit.freeze`` (folds
  Conv-BN, inlines the weights); a file ``kdcore.export`` could save (it keeps its speed after save/load);
- ``onnxruntime``: ``kdcore.export.export_onnx`` (dynamic batch, what the export path writes) run by an ONNX
  Runtime session with ``ORT_ENABLE_ALL`` graph optimisations and intra-op threads = usable cores.

Eager and TorchScript calls of teacher and student alternate round by round, so background load hits both
alike. ONNX Runtime models are timed one at a time, each session alone in the process as deployed: a
session's intra-op threads keep spinning after a run and would slow the other session's next call.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from kdcore.config import load_recipe
from kdcore.models import count_flops, count_parameters, create_model
from facekd.config import FaceRecipe
from medkd.config import OCTRecipe

from common import goal, synchronize

__all__ = ["Pair", "P3Settings", "RUNTIMES", "paper_pairs", "quick_pairs", "run_p3"]

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
RUNTIMES = ("eager", "eager_channels_last", "torchscript_frozen", "onnxruntime")
FACE_POINTS = 68  # 300W's iBUG 68-point scheme: 136 outputs
ONNX_GOAL = 0.7   # ONNX Runtime student latency <= 0.7 x eager PyTorch student latency


@dataclass(frozen=True)
class Pair:
    name: str
    teacher: str
    student: str
    size: int
    in_chans: int
    outputs: int
    goal: float
    source: str


@dataclass
class P3Settings:
    pairs: list[Pair] = field(default_factory=list)
    runtimes: tuple[str, ...] = RUNTIMES
    teacher_runs: int = 3          # ConvNeXtV2-L takes seconds per call on 2 cores
    student_calls: int = 5         # student calls per teacher call
    warmup_rounds: int = 1
    onnx_pairs: tuple[str, ...] = ("oct", "face")  # pairs measured in ONNX Runtime (export takes a while)
    onnx_pair: str = "oct"         # whose student gives the ONNX Runtime vs eager figure


def paper_pairs() -> list[Pair]:
    """The deployed pairs of the two papers, read from their recipes."""
    oct_recipe = load_recipe(OCTRecipe, PIPELINES / "kd_oct_neh.yaml")
    face = load_recipe(FaceRecipe, PIPELINES / "face_kd_300w.yaml")
    return [Pair("oct", oct_recipe.teacher.model, oct_recipe.student.model, oct_recipe.data.image_size, 1,
                 len(oct_recipe.data.classes or ()), 20.0, "pipelines/kd_oct_neh.yaml"),
            Pair("face", face.tough.model, face.student.model, face.data.image_size, 3, 2 * FACE_POINTS, 2.5,
                 "pipelines/face_kd_300w.yaml")]


def quick_pairs() -> list[Pair]:
    """Tiny stand-ins with the same structure (for the smoke test: the ratios mean nothing)."""
    return [Pair("oct", "test_resnet", "test_efficientnet", 64, 1, 3, 20.0, "quick stand-in"),
            Pair("face", "test_efficientnet", "test_resnet", 64, 3, 2 * FACE_POINTS, 2.5, "quick stand-in")]


# ------------------------------------------------------------------------------------------- runners

Runner = Callable[[], Any]


def _eager(model: nn.Module, example: torch.Tensor, channels_last: bool) -> Runner:
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        example = example.contiguous(memory_format=torch.channels_last)

    def run() -> Any:
        with torch.inference_mode():
            return model(example)

    return run


def _torchscript_frozen(model: nn.Module, example: torch.Tensor) -> Runner:
    model = model.to(memory_format=torch.channels_last)  # frozen weights keep this layout; inputs may stay NCHW
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notices
        frozen = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False))
        for _ in range(2):  # the profiling executor specialises the graph during the first calls
            frozen(example)

    def run() -> Any:
        with torch.inference_mode():
            return frozen(example)

    return run


def _onnxruntime(model: nn.Module, example: torch.Tensor, folder: Path, name: str,
                 device: torch.device) -> tuple[Runner, dict[str, Any]]:
    import onnxruntime as ort

    from kdcore.export import export_onnx

    path = folder / f"{name}.onnx"
    started = time.perf_counter()
    info = export_onnx(model, torch.cat([example, example]), path)  # the export path's own exporter
    info["export_s"] = round(time.perf_counter() - started, 2)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")  # else the figure is CPU ONNX Runtime; see "providers"

    session = ort.InferenceSession(str(path), options, providers=providers)
    info.update(providers=session.get_providers(), intra_op_threads=options.intra_op_num_threads,
                graph_optimization_level="ORT_ENABLE_ALL")
    path.unlink()  # large (ConvNeXtV2-L is ~0.8 GB); the session holds its own copy
    if session.get_providers()[0] == "CUDAExecutionProvider" and example.device.type == "cuda":
        # IO binding: input and output stay in GPU memory, as the eager runners' do; feeding a numpy array would
        # add a host-to-device copy (and the output's copy back) to every timed call.
        binding = session.io_binding()
        x = example.contiguous().float()
        binding.bind_input(name=session.get_inputs()[0].name, device_type="cuda", device_id=x.device.index or 0,
                           element_type=np.float32, shape=tuple(x.shape), buffer_ptr=x.data_ptr())
        binding.bind_output(session.get_outputs()[0].name, "cuda", x.device.index or 0)
        info["io_binding"] = True

        def run() -> Any:
            session.run_with_iobinding(binding)
            return x  # keeps the bound input alive

        return run, info
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(example.cpu().numpy(), dtype=np.float32)}
    info["io_binding"] = False
    return (lambda: session.run(None, feed)), info


def _runner(runtime: str, model: nn.Module, example: torch.Tensor, folder: Path, name: str,
            device: torch.device) -> tuple[Runner, dict[str, Any]]:
    if runtime == "eager":
        return _eager(model, example, channels_last=False), {}
    if runtime == "eager_channels_last":
        return _eager(model, example, channels_last=True), {}
    if runtime == "torchscript_frozen":
        return _torchscript_frozen(model, example), {}
    if runtime == "onnxruntime":
        return _onnxruntime(model, example, folder, name, device)
    raise ValueError(f"unknown runtime {runtime!r} (known: {', '.join(RUNTIMES)})")


# ------------------------------------------------------------------------------------------- timing

def _timed(fn: Runner, calls: int, device: torch.device) -> list[float]:
    times = []
    for _ in range(calls):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(1000 * (time.perf_counter() - start))
    return times


def _summary(times: dict[str, list[float]]) -> dict[str, Any]:
    teacher_ms, student_ms = statistics.median(times["teacher"]), statistics.median(times["student"])
    return {"teacher_ms": teacher_ms, "student_ms": student_ms, "ratio": teacher_ms / student_ms,
            "teacher_runs_ms": [round(t, 2) for t in times["teacher"]],
            "student_runs_ms": [round(t, 3) for t in times["student"]]}


def _alternate(teacher: Runner, student: Runner, settings: P3Settings, device: torch.device) -> dict[str, Any]:
    """Rounds of one teacher call then ``student_calls`` student calls (after one untimed settling call each)."""
    times: dict[str, list[float]] = {"teacher": [], "student": []}
    for round_ in range(settings.warmup_rounds + settings.teacher_runs):
        for role, fn, calls in (("teacher", teacher, 1), ("student", student, settings.student_calls)):
            fn()
            runs = _timed(fn, calls, device)
            if round_ >= settings.warmup_rounds:
                times[role] += runs
    return {**_summary(times), "schedule": "alternating"}


def _one_at_a_time(make: dict[str, Callable[[], tuple[Runner, dict]]], settings: P3Settings,
                   device: torch.device) -> tuple[dict[str, Any], dict[str, dict]]:
    """Each model alone in the process (how an ONNX Runtime session is deployed): two live sessions would
    compete, as each session's intra-op threads keep spinning for a while after a run."""
    times, infos = {}, {}
    student_runs = settings.teacher_runs * settings.student_calls
    for role, calls in (("teacher", settings.teacher_runs), ("student", student_runs)):
        run, infos[role] = make[role]()
        warmup = settings.warmup_rounds * (1 if role == "teacher" else settings.student_calls) + 1
        _timed(run, warmup, device)
        times[role] = _timed(run, calls, device)
        del run
    return {**_summary(times), "schedule": "one model at a time"}, infos


def _model(arch: str, pair: Pair, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return create_model(arch, num_outputs=pair.outputs, pretrained=False, in_chans=pair.in_chans).eval().to(device)


def _measure_pair(pair: Pair, settings: P3Settings, device: torch.device, folder: Path) -> dict[str, Any]:
    example = torch.randn(1, pair.in_chans, pair.size, pair.size, generator=torch.Generator().manual_seed(0))
    example = example.to(device)
    shape = (pair.in_chans, pair.size, pair.size)
    result: dict[str, Any] = {**asdict(pair), "runtimes": {}}
    for role, arch in (("teacher", pair.teacher), ("student", pair.student)):
        model = _model(arch, pair, device)
        result[f"{role}_params"] = count_parameters(model)
        result[f"{role}_gflops"] = round(count_flops(model, shape) / 1e9, 3)
        del model
    runtimes = [r for r in settings.runtimes if r != "onnxruntime" or pair.name in settings.onnx_pairs]
    for runtime in runtimes:
        make = {role: (lambda arch=arch, role=role: _runner(runtime, _model(arch, pair, device), example, folder,
                                                            role, device))
                for role, arch in (("teacher", pair.teacher), ("student", pair.student))}
        if runtime == "onnxruntime":
            row, infos = _one_at_a_time(make, settings, device)
            row["export"] = infos
        else:
            (teacher, _), (student, _) = make["teacher"](), make["student"]()
            row = _alternate(teacher, student, settings, device)
            del teacher, student
        result["runtimes"][runtime] = row
    eager = result["runtimes"]["eager"]
    result.update(teacher_ms=eager["teacher_ms"], student_ms=eager["student_ms"], ratio=eager["ratio"],
                  runtime="eager", **goal(eager["ratio"], pair.goal))
    return result


def run_p3(device: torch.device, settings: P3Settings, workdir: str | Path | None = None) -> dict[str, Any]:
    if "eager" not in settings.runtimes:
        raise ValueError("the eager runtime is the headline figure and cannot be left out")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for pair in settings.pairs:
            out[pair.name] = _measure_pair(pair, settings, device, Path(tmp))
    source = out.get(settings.onnx_pair, {}).get("runtimes", {})
    if "onnxruntime" in source:
        eager_ms, onnx_ms = source["eager"]["student_ms"], source["onnxruntime"]["student_ms"]
        ratio = onnx_ms / eager_ms
        out["onnx_vs_eager"] = {"model": out[settings.onnx_pair]["student"], "pair": settings.onnx_pair,
                                "eager_ms": eager_ms, "onnx_ms": onnx_ms, "ratio": ratio,
                                **goal(ratio, ONNX_GOAL, higher_is_better=False)}
    return out
