"""P5: batch-1 latency of the int8 OCT student over the float32 ONNX student, both in ONNX Runtime on the CPU.

The student of ``kd_oct_neh.yaml`` (EfficientNet-B2, 384 px, one channel, 3 classes, random weights: the
values do not change the speed) is exported by ``kdcore.export.export_onnx`` and quantized by
``kdcore.export.quantize_int8`` exactly as ``medkd export --format onnx-int8`` does (static QDQ, int8 weights
per channel, MinMax calibration), calibrated here on synthetic B-scans preprocessed by the OCT contract.
Each model runs in its own session (ORT_ENABLE_ALL, intra-op threads = torch's threads), one session alive at
a time as deployed (a session's spinning threads would slow the other's calls); blocks of calls alternate
between the two files, each block opening its session anew, so background load hits both alike. The int8
model's top-1 agreement with float32 on the calibration-free held-out images is reported, not gated (random
weights give near-tied logits).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdcore.config import load_recipe
from kdcore.export import export_onnx, onnx_runner, quantize_int8
from kdcore.models import create_model
from medkd.config import OCTRecipe
from medkd.preprocess import OCT_MEAN, OCT_STD, preprocess
from kdcore.images import read_image

from oct_data import write_oct_dataset

__all__ = ["P5Settings", "run_p5"]

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


@dataclass
class P5Settings:
    recipe: str = "kd_oct_neh.yaml"
    image_size: int | None = None    # None: the recipe's (384)
    model: str | None = None         # None: the recipe's student (a stand-in for --quick)
    calibration_images: int = 32
    held_out_images: int = 16
    blocks: int = 4                  # timed blocks per model, alternating
    calls: int = 10                  # timed calls per block, after 2 untimed ones


def _session(path: Path):
    # One intra-op thread count for both models, as torch uses: the comparison is int8 against float32 alone.
    return onnx_runner(path, threads=torch.get_num_threads())


def _block(path: Path, example: np.ndarray, calls: int) -> list[float]:
    run = _session(path)
    for _ in range(2):
        run(example)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run(example)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def run_p5(settings: P5Settings, workdir: str | Path | None = None) -> dict[str, Any]:
    recipe = load_recipe(OCTRecipe, PIPELINES / settings.recipe, extra={"student.pretrained": False})
    size = settings.image_size or recipe.data.image_size
    classes = recipe.data.classes or ["NORMAL", "DRUSEN", "CNV"]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        n = settings.calibration_images + settings.held_out_images
        data = write_oct_dataset(tmp / "oct", max(len(classes), n // 4), (768, 496), seed=0, classes=classes,
                                 subset="all")
        scans = [preprocess(read_image(r.path, "gray"), size, OCT_MEAN, OCT_STD) for r in data.records[:n]]
        inputs = np.stack(scans).astype(np.float32)
        calibration, held_out = inputs[:settings.calibration_images], inputs[settings.calibration_images:]
        torch.manual_seed(0)
        arch = settings.model or recipe.student.model
        model = create_model(arch, len(classes), pretrained=False, in_chans=1).eval()
        fp32, int8 = tmp / "model.onnx", tmp / "model.int8.onnx"
        started = time.perf_counter()
        export_onnx(model, torch.from_numpy(inputs[:2]), fp32)
        export_s = time.perf_counter() - started
        started = time.perf_counter()
        info = quantize_int8(fp32, int8, calibration)
        quantize_s = time.perf_counter() - started
        example = np.ascontiguousarray(held_out[:1])
        ms: dict[str, list[float]] = {"fp32": [], "int8": []}
        for _ in range(settings.blocks):
            ms["fp32"] += _block(fp32, example, settings.calls)
            ms["int8"] += _block(int8, example, settings.calls)
        reference = np.concatenate([_session(fp32)(held_out[i:i + 1]) for i in range(len(held_out))])
        quantized = np.concatenate([_session(int8)(held_out[i:i + 1]) for i in range(len(held_out))])
    median = {name: statistics.median(values) for name, values in ms.items()}
    ratio = median["int8"] / median["fp32"]
    return {"ratio": ratio, "fp32_ms": median["fp32"], "int8_ms": median["int8"],
            "calls_ms": {k: [round(v, 3) for v in values] for k, values in ms.items()},
            "top1_agreement_random_weights": float((reference.argmax(1) == quantized.argmax(1)).mean()),
            "export_s": round(export_s, 2), "quantize_s": round(quantize_s, 2), "quantization": info,
            "config": {"recipe": f"pipelines/{settings.recipe}", "model": arch, "image_size": size,
                       "in_chans": 1, "classes": len(classes), "threads": torch.get_num_threads(),
                       "calibration_images": len(calibration), "held_out_images": len(held_out),
                       "blocks": settings.blocks, "calls_per_block": settings.calls, "pretrained": False}}
