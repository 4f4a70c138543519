"""P2: images/s of our OCT training data path versus KD-OCT's, same process, same files, no workers.

Ours: :class:`medkd.dataset.BScanDataset` with the teacher's strong augmentation of
``pipelines/kd_oct_neh.yaml`` (strict greyscale decode, letterbox to 384, albumentations, normalise, tensor),
the default path with no cache. Reference: :mod:`reference_kdoct` (PIL RGB decode and KD-OCT's torchvision
chain). Inputs: 768x496 greyscale JPEG B-scans from ``medkd.synth`` (NEH's size). Passes alternate between
the two so background load affects both alike.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from kdcore.config import load_recipe
from kdcore.images import read_image
from kdcore.seeding import derive_seed
from medkd.config import OCTRecipe
from medkd.dataset import BScanDataset
from medkd.preprocess import OCT_MEAN, OCT_STD, letterbox, normalize
from medkd.transforms import augment, build_augment

from common import goal
from oct_data import write_oct_dataset
from reference_kdoct import KDOCT_SOURCE, kdoct_load, kdoct_train_transform

__all__ = ["P2Settings", "run_p2", "NEH_RECIPE"]

NEH_RECIPE = Path(__file__).resolve().parents[1] / "pipelines" / "kd_oct_neh.yaml"
GOAL = 2.0


@dataclass
class P2Settings:
    patients: int = 12                          # ~58 B-scans
    source_size: tuple[int, int] = (768, 496)   # (width, height), NEH's B-scan size
    input_size: int = 384
    warmup: int = 1
    runs: int = 5


def _alternate(passes: dict[str, Callable[[], None]], warmup: int, runs: int) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {name: [] for name in passes}
    for round_ in range(warmup + runs):
        for name, fn in passes.items():
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                seconds[name].append(time.perf_counter() - start)
    return seconds


def run_p2(settings: P2Settings, workdir: str | Path | None = None,
           recipe_path: str | Path = NEH_RECIPE) -> dict[str, Any]:
    recipe = load_recipe(OCTRecipe, recipe_path)
    size = settings.input_size
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        data = write_oct_dataset(Path(tmp) / "oct", settings.patients, settings.source_size, seed=0,
                                 classes=recipe.data.classes)
        paths = [r.path for r in data.records]
        ours = BScanDataset(data.records, data.classes, size, build_augment(recipe.teacher.augment))
        reference = kdoct_train_transform(size)
        np.random.seed(0)
        torch.manual_seed(0)
        counter = {"ours": 0}

        def ours_pass() -> None:
            counter["ours"] += 1
            for i in range(len(ours)):
                ours[(i, derive_seed(0, "p2", counter["ours"], i))]

        def reference_pass() -> None:
            for path in paths:
                kdoct_load(path, reference)

        seconds = _alternate({"ours": ours_pass, "reference": reference_pass}, settings.warmup, settings.runs)
        stages = _our_stages(paths, size, build_augment(recipe.teacher.augment))

    n = len(paths)
    ours_ips = n / statistics.median(seconds["ours"])
    ref_ips = n / statistics.median(seconds["reference"])
    ratio = ours_ips / ref_ips
    return {"ratio": ratio, "ours_images_per_s": ours_ips, "reference_images_per_s": ref_ips, **goal(ratio, GOAL),
            "images": n, "source_size": list(settings.source_size), "input_size": size, "passes": settings.runs,
            "ours_passes_s": [round(s, 4) for s in seconds["ours"]],
            "reference_passes_s": [round(s, 4) for s in seconds["reference"]],
            "ours_stages_ms_per_image": stages,
            "ours_chain": "kdcore.images.read_image(gray) -> medkd.preprocess.letterbox(384) -> "
                          f"medkd.transforms.build_augment({Path(recipe_path).name} teacher.augment) -> normalize -> "
                          "torch.from_numpy (BScanDataset.__getitem__, cache off)",
            "ours_augment": recipe.teacher.augment.model_dump(mode="json"),
            "reference_chain": "PIL Image.open().convert('RGB') -> KD-OCT AdvancedDataAugmentation(384, training, "
                               "RandAugment) (see benchmarks/reference_kdoct.py)",
            "reference_source": KDOCT_SOURCE,
            "threads": {"torch": torch.get_num_threads(), "opencv": cv2.getNumThreads(), "dataloader_workers": 0}}


def _our_stages(paths: list[Path], size: int, pipeline) -> dict[str, float]:
    """Median ms per image of each stage of our chain (informative breakdown of ``ours``)."""
    def per_image(fn: Callable[[], Any]) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return round(1000 * statistics.median(times) / len(paths), 4)

    images = [read_image(p, "gray") for p in paths]
    canvases = [letterbox(image, size) for image in images]
    augmented = [augment(pipeline, c, i) for i, c in enumerate(canvases)]
    return {"decode": per_image(lambda: [read_image(p, "gray") for p in paths]),
            "letterbox": per_image(lambda: [letterbox(image, size) for image in images]),
            "augment": per_image(lambda: [augment(pipeline, c, i) for i, c in enumerate(canvases)]),
            "normalize_to_tensor": per_image(lambda: [torch.from_numpy(normalize(a, OCT_MEAN, OCT_STD))
                                                      for a in augmented])}
