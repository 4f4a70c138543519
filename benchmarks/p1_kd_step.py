"""P1: the share of pure compute speed a real online-distillation step keeps when its data come from files.

Both sides run the engine's own training loop (:class:`kdcore.engine.Trainer`, one epoch at a time) with the
demo recipe's models, loss and optimizer: FrozenTeacher forward, student forward/backward with KDLoss, AdamW
step, LR schedule. The *full* side feeds it from ``kdcore.loaders.train_loader`` over a
:class:`medkd.dataset.BScanDataset` reading JPEG files written by ``medkd.synth``, with the student's
augmentation; the *tensors* side feeds it the same batches already in memory, with the same compute options.
Epochs of all variants are interleaved round by round, so a change of background load hits every variant alike.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from kdcore.config import load_recipe
from kdcore.engine import Trainer, move_to_device
from kdcore.engine.optim import build_scheduler
from kdcore.loaders import sampler_seed, train_loader
from kdcore.objective import build_student_objective
from kdcore.teacher import FrozenTeacher
from medkd.config import OCTRecipe
from medkd.dataset import BScanDataset
from medkd.vertical import oct_network
from medkd.tasks import ClassificationTask
from medkd.transforms import build_augment

from common import goal, synchronize
from oct_data import write_oct_dataset

__all__ = ["Variant", "VARIANTS", "CHOSEN", "P1Settings", "run_p1", "DEMO_RECIPE"]

DEMO_RECIPE = Path(__file__).resolve().parents[1] / "pipelines" / "kd_oct_demo.yaml"
GOAL = 0.90


@dataclass(frozen=True)
class Variant:
    """How the full step gets its data, and the compute options it shares with its in-memory baseline."""

    name: str
    workers: int
    cache_decoded: bool
    channels_last: bool
    note: str


VARIANTS = (
    Variant("demo_default", 0, False, False, "the demo recipe as it runs: decode + letterbox every image every epoch"),
    Variant("cache", 0, True, False, "BScanDataset(cache_decoded=True): decode + letterbox once, augment every epoch"),
    Variant("workers1", 1, False, False, "one persistent DataLoader worker, no cache"),
    Variant("workers1_cache", 1, True, False, "one persistent DataLoader worker holding its own canvas cache"),
    Variant("cache_channels_last", 0, True, True, "cache, with student and teacher in channels_last"),
)
# Fixed before measuring, from development runs on the 2-core machine: a worker process competes with the two
# compute threads, while the cache removes ~2/3 of the per-image data cost from the main process. The demo's
# compute settings (fp32, contiguous) are kept, so the figure is about the data path.
CHOSEN = "cache"


@dataclass
class P1Settings:
    patients: int | None = None         # None: the demo recipe's synthetic dataset as is
    image_size: int | None = None       # None: the recipe's image_size
    batch_size: int | None = None       # None: the student's batch_size
    warmup_rounds: int = 1
    rounds: int = 5
    knob_batches: int = 2               # batches per epoch when timing bf16 / torch.compile (both can be slow)
    bf16: bool = True
    compile: bool = False


class InMemoryBatches(list):
    """Batches already on the device, iterable like a DataLoader (no sampler: nothing to reshuffle)."""

    sampler = None


@dataclass
class Step:
    """One way of running the distillation step: the trainer and the module its loop calls."""

    trainer: Trainer
    model: nn.Module


def _student_loss(recipe: OCTRecipe) -> nn.Module:
    student = recipe.student
    if student.kd_loss != "kd":
        raise ValueError(f"P1 measures the demo's Hinton KD loss; the recipe asks for {student.kd_loss!r}")
    return build_student_objective(student)


def _step(recipe: OCTRecipe, classes: list[str], device: torch.device, steps_per_epoch: int, *,
          channels_last: bool = False, amp_dtype: torch.dtype | None = None, compile: bool = False) -> Step:
    """The student's Trainer with a FrozenTeacher, wired as kdcore.vertical.train_role wires them (random weights:
    the values of the weights do not change the speed)."""
    torch.manual_seed(0)
    teacher_model = oct_network(recipe, "teacher", classes).to(device)
    if channels_last:  # the Trainer converts the student; the teacher must match or convolutions mix layouts
        teacher_model = teacher_model.to(memory_format=torch.channels_last)
    teacher = FrozenTeacher(teacher_model, amp_dtype=amp_dtype)
    student = oct_network(recipe, "student", classes)
    task = ClassificationTask(_student_loss(recipe).to(device), None, classes, device, teacher)
    cfg = recipe.student.train
    trainer = Trainer(student, cfg, task, monitor=recipe.student.monitor, mode="max", device=device,
                      amp_dtype=amp_dtype, seed=recipe.seed, name="student", fold=0, channels_last=channels_last)
    trainer.scheduler = build_scheduler(trainer.optimizer, cfg, steps_per_epoch, cfg.epochs)
    # As the engine's runtime.compile does: only the student's training forward is compiled.
    return Step(trainer, torch.compile(trainer.model) if compile else trainer.model)


def _epoch_seconds(step: Step, loader: Iterable, epoch: int, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    step.trainer._train_epoch(step.model, loader, epoch, in_swa=False)  # the engine's own epoch loop
    synchronize(device)
    return time.perf_counter() - start


def _interleaved(runs: dict[str, tuple[Step, Iterable]], images: int, device: torch.device, warmup_rounds: int,
                 rounds: int) -> dict[str, dict[str, Any]]:
    """Round-robin epochs over ``runs``; the untimed first ``warmup_rounds`` fill caches and start workers."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    epoch = 0
    for round_ in range(warmup_rounds + rounds):
        for name, (step, loader) in runs.items():
            elapsed = _epoch_seconds(step, loader, epoch, device)
            epoch += 1
            if round_ >= warmup_rounds:
                seconds[name].append(elapsed)
    out = {}
    for name, values in seconds.items():
        median = statistics.median(values)
        out[name] = {"images_per_s": images / median, "epoch_median_s": median,
                     "epochs_s": [round(s, 4) for s in values]}
    return out


def run_p1(device: torch.device, settings: P1Settings, workdir: str | Path | None = None,
           recipe_path: str | Path = DEMO_RECIPE) -> dict[str, Any]:
    recipe = load_recipe(OCTRecipe, recipe_path)
    synth = recipe.data.synthetic
    size = settings.image_size or recipe.data.image_size
    batch = settings.batch_size or recipe.student.train.batch_size
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        data = write_oct_dataset(Path(tmp) / "oct", settings.patients or synth.patients, tuple(synth.image_size),
                                 seed=synth.seed, scans_per_eye=tuple(synth.scans_per_eye),
                                 lesion_strength=synth.lesion_strength, noise=synth.noise,
                                 classes=recipe.data.classes, subset=recipe.data.subset)
        records, classes = data.records, data.classes
        seed = sampler_seed(recipe.seed, "student", 0)

        def loader(workers: int, cache: bool):
            dataset = BScanDataset(records, classes, size, build_augment(recipe.student.augment), cache_decoded=cache)
            return train_loader(dataset, batch, device, workers, seed)

        # The very batches the loaders produce, decoded and augmented once, kept on the device.
        tensors = InMemoryBatches(move_to_device(b, device) for b in loader(0, False))
        images = sum(len(b["target"]) for b in tensors)
        steps = {cl: _step(recipe, classes, device, len(tensors), channels_last=cl) for cl in (False, True)}
        runs = {"tensors": (steps[False], tensors), "tensors_channels_last": (steps[True], tensors)}
        runs.update({v.name: (steps[v.channels_last], loader(v.workers, v.cache_decoded)) for v in VARIANTS})
        timed = _interleaved(runs, images, device, settings.warmup_rounds, settings.rounds)
        knobs = _compute_knobs(recipe, classes, device, tensors, settings)

    variants = {}
    for v in VARIANTS:
        base = timed["tensors_channels_last" if v.channels_last else "tensors"]
        row = timed[v.name]
        variants[v.name] = {**asdict(v), "images_per_s": row["images_per_s"],
                            "images_per_s_tensors": base["images_per_s"],
                            "ratio": base["epoch_median_s"] / row["epoch_median_s"], "epochs_s": row["epochs_s"]}
    chosen = variants[CHOSEN]
    config = {"recipe": Path(recipe_path).name, "teacher": recipe.teacher.model, "student": recipe.student.model,
              "image_size": size, "in_chans": 1, "batch_size": batch, "optimizer": recipe.student.train.optimizer,
              "loss": f"kd (T={recipe.student.temperature}, ce_weight={recipe.student.ce_weight}, "
                      f"kd_weight={recipe.student.kd_weight})",
              "augment": recipe.student.augment.model_dump(mode="json"), "source_images": len(records),
              "source_image_size": list(synth.image_size), "images_per_epoch": images, "variant": CHOSEN,
              "workers": chosen["workers"], "persistent_workers": chosen["workers"] > 0,
              "cache_decoded": chosen["cache_decoded"], "channels_last": chosen["channels_last"], "amp": None,
              "timed_rounds": settings.rounds, "warmup_rounds": settings.warmup_rounds}
    return {"ratio": chosen["ratio"], "images_per_s_full": chosen["images_per_s"],
            "images_per_s_tensors": chosen["images_per_s_tensors"], **goal(chosen["ratio"], GOAL), "config": config,
            "tensors_epochs_s": timed["tensors"]["epochs_s"], "variants": variants, "compute_knobs": knobs}


def _compute_knobs(recipe: OCTRecipe, classes: list[str], device: torch.device, tensors: InMemoryBatches,
                   settings: P1Settings) -> dict[str, Any]:
    """In-memory step speed under options that change the numbers (autocast, torch.compile), on a few batches."""
    subset = InMemoryBatches(tensors[:settings.knob_batches])
    images = sum(len(b["target"]) for b in subset)
    options: dict[str, dict[str, Any]] = {"fp32": {}}
    if settings.bf16:
        options["autocast_" + ("bf16" if device.type == "cpu" else "fp16")] = {
            "amp_dtype": torch.bfloat16 if device.type == "cpu" else torch.float16}
    if settings.compile:
        options["torch_compile"] = {"compile": True}
    runs = {name: (_step(recipe, classes, device, len(subset), **kwargs), subset) for name, kwargs in options.items()}
    timed = _interleaved(runs, images, device, 1, 2)
    return {name: {"images_per_s": row["images_per_s"], "epochs_s": row["epochs_s"],
                   "batches_per_epoch": len(subset)} for name, row in timed.items()}
