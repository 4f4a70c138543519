"""GPU check: KD-OCT's pair at the real sizes on a CUDA device -> ``benchmarks/gpu_results.json``.

    make gpu-check                                                   # CUDA machine: every measurement below
    python benchmarks/gpu_check.py --device cuda:1 --out /tmp/g.json # another GPU, another file
    python benchmarks/gpu_check.py --quick --device cpu --allow-cpu --out /tmp/g.json   # the logic, on the CPU

With ``pretrained=False`` (weights do not change the speed), on the recipe ``pipelines/kd_oct_neh.yaml``
(ConvNeXtV2-L teacher, EfficientNet-B2 student, 384 px, one channel):

- ``train_steps``: the engine's own KD step (FrozenTeacher forward, student forward/backward, optimizer) on
  batches already on the device, for every combination of precision (fp32, bf16, fp16 with a GradScaler),
  channels_last (off, on) and torch.compile (off, on): ms per step, images/s, peak GPU memory.
- ``p1``: benchmarks/p1_kd_step.py at 384 px, whose variants include DataLoader workers (pinned memory on CUDA).
- ``latency``: batch-1 latency of the teacher, the student, the student exported as TorchScript
  (``kdcore.export``), and in ONNX Runtime's CUDA provider where it is installed; each with its memory peak.
- ``host_syncs_per_step``: host-device synchronisations per training step, filled when kdcore provides a counter
  (``kdcore.engine.syncs.count_host_syncs``); ``null`` with a note otherwise.

Without a CUDA device it says so and exits 0, leaving any earlier results file as it was.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules, also when imported from elsewhere

import torch  # noqa: E402

from kdcore.atomic import atomic_write_json  # noqa: E402

from common import machine_facts, synchronize, time_runs  # noqa: E402

__all__ = ["GPUSettings", "main", "parse_args", "variants", "describe_device", "host_sync_counter", "SCHEMA"]

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
DEFAULT_OUT = Path(__file__).resolve().parent / "gpu_results.json"
SCHEMA = 1
PRECISIONS = ("fp32", "bf16", "fp16")
NO_CUDA = ("gpu-check: no CUDA device here (torch.cuda.is_available() is False, torch {version}); nothing was "
           "measured and {out} was left as it was. Run `make gpu-check` on a machine with an NVIDIA GPU.")


@dataclass
class GPUSettings:
    recipe: str = "kd_oct_neh.yaml"
    models: tuple[str, str] | None = None   # (teacher, student) instead of the recipe's (stand-ins for --quick)
    image_size: int | None = None           # None: the recipe's (384)
    batch_size: int | None = None           # None: the student's
    precisions: tuple[str, ...] = PRECISIONS
    channels_last: tuple[bool, ...] = (False, True)
    compile: tuple[bool, ...] = (False, True)
    warmup_steps: int = 3
    steps: int = 10
    compile_warmup_steps: int = 3           # on top of warmup_steps: the first compiled calls compile
    latency_runs: int = 20
    p1_patients: int | None = None          # None: the demo recipe's synthetic dataset
    p1_rounds: int = 3
    only: tuple[str, ...] = ("train_steps", "p1", "latency")

    @classmethod
    def quick(cls, only: tuple[str, ...] = ("train_steps", "p1", "latency")) -> "GPUSettings":
        return cls(models=("test_resnet", "test_efficientnet"), image_size=64, batch_size=4,
                   precisions=("fp32", "fp16"), compile=(False,), warmup_steps=1, steps=2, compile_warmup_steps=0,
                   latency_runs=2, p1_patients=6, p1_rounds=1, only=only)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results file (JSON)")
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N (cpu only with --allow-cpu)")
    parser.add_argument("--only", default="train_steps,p1,latency",
                        help="comma-separated subset of train_steps, p1, latency")
    parser.add_argument("--quick", action="store_true", help="tiny stand-in models and sizes (checks the logic)")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU (tests of this script only)")
    parser.add_argument("--workdir", default=None, help="folder for temporary images and exported files")
    args = parser.parse_args(argv)
    only = tuple(part.strip() for part in args.only.split(",") if part.strip())
    unknown = sorted(set(only) - {"train_steps", "p1", "latency"})
    if unknown or not only:
        parser.error(f"--only: unknown part(s) {unknown or '(empty)'}; choose from train_steps, p1, latency")
    if not args.device.startswith(("cuda", "cpu")):
        parser.error(f"--device {args.device!r}: expected cuda, cuda:N or (with --allow-cpu) cpu")
    if args.device.startswith("cpu") and not args.allow_cpu:
        parser.error("--device cpu measures nothing a GPU check is for; add --allow-cpu to test the script")
    args.only = only
    return args


def describe_device(device: torch.device) -> dict[str, Any]:
    """What the figures depend on: the GPU, its memory and compute capability, CUDA, cuDNN and driver-side torch."""
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
                            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, total_memory_gib=round(props.total_memory / 2**30, 2),
                    capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                    bf16_supported=torch.cuda.is_bf16_supported(), device_count=torch.cuda.device_count())
    else:
        info.update(name="CPU (script test only, not a GPU result)", bf16_supported=True)
    return info


def host_sync_counter() -> Callable[..., Any] | None:
    """kdcore's host-sync counter when it has one (``kdcore.engine.syncs.count_host_syncs``), else None.

    Expected contract: a context manager whose value has ``.count`` (host-device syncs seen inside the block).
    """
    try:
        module = importlib.import_module("kdcore.engine.syncs")
    except ImportError:
        return None
    return getattr(module, "count_host_syncs", None)


def variants(settings: GPUSettings) -> list[dict[str, Any]]:
    """Every (precision, channels_last, compile) combination to time, in a fixed order."""
    return [{"precision": p, "channels_last": cl, "compile": c}
            for p, cl, c in itertools.product(settings.precisions, settings.channels_last, settings.compile)]


def _amp_dtype(precision: str) -> torch.dtype | None:
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _recipe(settings: GPUSettings):
    from kdcore.config import load_recipe
    from medkd.config import OCTRecipe

    extra: dict[str, Any] = {"teacher.pretrained": False, "student.pretrained": False}
    if settings.models:
        extra.update({"teacher.model": settings.models[0], "student.model": settings.models[1]})
    if settings.image_size:
        extra["data.image_size"] = settings.image_size
    if settings.batch_size:
        extra["student.train.batch_size"] = settings.batch_size
    return load_recipe(OCTRecipe, PIPELINES / settings.recipe, extra=extra)


def _memory_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _memory_peak(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def train_steps(device: torch.device, settings: GPUSettings) -> list[dict[str, Any]]:
    """The engine's KD step per variant; a variant that fails is recorded with its error, the others still run."""
    from p1_kd_step import InMemoryBatches, _step

    recipe = _recipe(settings)
    classes = list(recipe.data.classes or ("NORMAL", "DRUSEN", "CNV"))
    size, batch = recipe.data.image_size, recipe.student.train.batch_size
    generator = torch.Generator().manual_seed(0)
    batches = InMemoryBatches(
        {"image": torch.randn(batch, 1, size, size, generator=generator).to(device),
         "target": torch.randint(0, len(classes), (batch,), generator=generator).to(device),
         "index": torch.arange(batch, device=device)} for _ in range(settings.steps))
    warm = InMemoryBatches(batches[:1] * settings.warmup_steps)
    counter = host_sync_counter()
    rows = []
    for variant in variants(settings):
        row: dict[str, Any] = dict(variant)
        amp = _amp_dtype(variant["precision"])
        if amp == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            rows.append({**row, "skipped": "bf16 not supported by this GPU"})
            continue
        try:
            _memory_reset(device)
            step = _step(recipe, classes, device, len(batches), channels_last=variant["channels_last"],
                         amp_dtype=amp, compile=variant["compile"])
            extra = settings.compile_warmup_steps if variant["compile"] else 0
            if settings.warmup_steps + extra:
                step.trainer._train_epoch(step.model, InMemoryBatches(batches[:1] * (settings.warmup_steps + extra)),
                                          0, in_swa=False)
            synchronize(device)
            started = time.perf_counter()
            step.trainer._train_epoch(step.model, batches, 1, in_swa=False)
            synchronize(device)
            seconds = time.perf_counter() - started
            row.update(ms_per_step=1000 * seconds / len(batches), images_per_s=batch * len(batches) / seconds,
                       peak_memory_mib=_memory_peak(device), grad_scaler=step.trainer.scaler.is_enabled())
            if counter is not None:
                with counter(device) as seen:
                    step.trainer._train_epoch(step.model, warm, 2, in_swa=False)
                row["host_syncs_per_step"] = seen.count / max(1, len(warm))
        except Exception as exc:  # one broken combination (e.g. compile on an old driver) must not hide the rest
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        rows.append(row)
        print(f"[gpu-check] train step {variant}: " + (f"{row['ms_per_step']:.1f} ms" if "ms_per_step" in row
                                                       else row.get("error", row.get("skipped", ""))), flush=True)
    return rows


def latency(device: torch.device, settings: GPUSettings, workdir: str | None) -> dict[str, Any]:
    """Batch-1 latency of teacher, student, TorchScript student and (where installed) ONNX Runtime on CUDA."""
    from kdcore.export import export_onnx, export_torchscript
    from kdcore.models import create_model

    recipe = _recipe(settings)
    n_classes = len(recipe.data.classes or ("NORMAL", "DRUSEN", "CNV"))
    size = recipe.data.image_size
    example = torch.randn(1, 1, size, size, device=device)
    out: dict[str, Any] = {"batch": 1, "image_size": size, "runs": settings.latency_runs}

    def timed(name: str, fn: Callable[[], Any]) -> None:
        _memory_reset(device)
        t = time_runs(fn, warmup=3, runs=settings.latency_runs, device=device)
        out[name] = {"median_ms": 1000 * t["median_s"], "p25_ms": 1000 * t["p25_s"], "p75_ms": 1000 * t["p75_s"],
                     "peak_memory_mib": _memory_peak(device)}

    torch.manual_seed(0)
    teacher = create_model(recipe.teacher.model, n_classes, pretrained=False, in_chans=1).to(device).eval()
    with torch.inference_mode():
        timed("teacher_eager", lambda: teacher(example))
    del teacher
    student = create_model(recipe.student.model, n_classes, pretrained=False, in_chans=1).eval()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        pair = torch.zeros(2, 1, size, size)
        export_torchscript(student, pair, Path(tmp) / "student.ts")
        export_onnx(student, pair, Path(tmp) / "student.onnx")
        student = student.to(device)
        with torch.inference_mode():
            timed("student_eager", lambda: student(example))
            scripted = torch.jit.load(str(Path(tmp) / "student.ts"), map_location=device).eval()
            timed("student_torchscript", lambda: scripted(example))
        out["student_onnxruntime"] = _onnx_latency(Path(tmp) / "student.onnx", example, device, timed, out)
    return out


def _onnx_latency(path: Path, example: torch.Tensor, device: torch.device, timed, out: dict) -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"skipped": "onnxruntime is not installed"}
    provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        return {"skipped": f"{provider} not available (install onnxruntime-gpu)",
                "available": ort.get_available_providers()}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=[provider])
    feed = {session.get_inputs()[0].name: example.cpu().numpy()}
    timed("_onnx", lambda: session.run(None, feed))
    return {**out.pop("_onnx"), "provider": provider, "note": "input copied from the host on every call"}


def run_check(device: torch.device, settings: GPUSettings, workdir: str | None = None) -> dict[str, Any]:
    """Every requested part, in the layout of ``gpu_results.json``."""
    results: dict[str, Any] = {"schema": SCHEMA, "device": describe_device(device), "machine": machine_facts(device),
                               "settings": asdict(settings), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    counter = host_sync_counter()
    results["host_syncs_per_step"] = {
        "value": None, "source": "kdcore.engine.syncs.count_host_syncs",
        "note": ("per train_steps variant (its 'host_syncs_per_step')" if counter is not None else
                 "kdcore provides no host-sync counter yet; the slot is filled once it does")}
    if "train_steps" in settings.only:
        results["train_steps"] = train_steps(device, settings)
        counted = [r["host_syncs_per_step"] for r in results["train_steps"] if "host_syncs_per_step" in r]
        if counted:
            results["host_syncs_per_step"]["value"] = counted[0]  # the fp32, contiguous, eager variant
    if "p1" in settings.only:
        from p1_kd_step import P1Settings, run_p1

        image_size = settings.image_size or _recipe(settings).data.image_size
        results["p1"] = run_p1(device, P1Settings(patients=settings.p1_patients, image_size=image_size,
                                                  rounds=settings.p1_rounds, bf16=False), workdir)
    if "latency" in settings.only:
        results["latency"] = latency(device, settings, workdir)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(NO_CUDA.format(version=torch.__version__, out=args.out), flush=True)
        return 0
    device = torch.device(args.device)
    settings = GPUSettings.quick(args.only) if args.quick else GPUSettings(only=args.only)
    started = time.perf_counter()
    results = run_check(device, settings, args.workdir)
    results["duration_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, results)
    print(f"[gpu-check] {args.out} written in {results['duration_s']:.0f} s ({results['device'].get('name')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
