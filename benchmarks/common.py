"""What every benchmark shares: timing (median of several runs after warm-up), device syncs, machine facts."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from importlib import metadata
from typing import Any, Callable

import torch

__all__ = ["Timing", "time_runs", "synchronize", "machine_facts", "load_average", "goal", "VERSIONED"]

VERSIONED = ("torch", "torchvision", "timm", "albumentations", "albucore", "opencv-python-headless", "numpy",
             "pillow", "onnx", "onnxruntime", "onnxscript")


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued GPU work, so a wall-clock timing covers it (no-op on the CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Timing(dict):
    """Wall-clock seconds of the timed runs: ``median_s``, ``min_s``, ``p25_s``, ``p75_s``, ``runs``, ``all_s``."""

    @property
    def median(self) -> float:
        return self["median_s"]


def time_runs(fn: Callable[[], Any], *, warmup: int, runs: int, device: torch.device | str | None = None) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``runs`` times timed; the GPU is synced around each run.

    Example:
        >>> t = time_runs(lambda: sum(range(1000)), warmup=1, runs=3)
        >>> t["runs"], t["min_s"] <= t["median_s"]
        (3, True)
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    quartiles = statistics.quantiles(times, n=4, method="inclusive") if runs >= 2 else [times[0]] * 3
    return Timing(median_s=statistics.median(times), min_s=min(times), p25_s=quartiles[0], p75_s=quartiles[2],
                  runs=runs, all_s=[round(t, 6) for t in times])


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _processor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    """The vector extensions that decide CPU speed and bf16 support (Linux only)."""
    wanted = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [f for f in wanted if f in flags]
    except OSError:
        pass
    return []


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_facts(device: torch.device) -> dict[str, Any]:
    """Everything a throughput or latency figure depends on, recorded beside it."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    facts: dict[str, Any] = {
        "processor": _processor(), "cpu_flags": _cpu_flags(), "cpu_count": os.cpu_count(), "usable_cores": usable,
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "platform": platform.platform(), "python": sys.version.split()[0], "device": str(device),
        "load_average_at_start": load_average(),
        "versions": {name: _version(name) for name in VERSIONED},
    }
    try:
        import cv2

        facts["opencv_threads"] = cv2.getNumThreads()
    except ImportError:
        pass
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def goal(value: float, target: float, higher_is_better: bool = True) -> dict[str, Any]:
    """``{"goal": ">= 0.9", "met": True}`` for a figure and its target."""
    met = value >= target if higher_is_better else value <= target
    return {"goal": f"{'>=' if higher_is_better else '<='} {target:g}", "met": bool(met)}
