"""P4: what distillation costs once the teacher's outputs come from the fold's cache.

For each pair, three students train epoch by epoch in the engine's own loop (:class:`kdcore.engine.Trainer`),
from the same initial weights on the same real-file loader (``BScanDataset`` over JPEGs, the student's
augmentation, ``cache_decoded``): *no_kd* (cross-entropy only, the baseline's step), *kd_cached* (KD loss with
the teacher's logits read from a ``views`` :class:`kdcore.teacher_cache.TeacherCache` built beforehand), and
*kd_online* (KD loss with the :class:`~kdcore.teacher.FrozenTeacher` run on every batch). Round ``r`` runs epoch
``r`` of every student, so background load hits them alike. P4 = kd_cached epoch / no_kd epoch (medians). The
cache's build time is reported on its own, and kd_cached's final weights are compared with kd_online's: the
views cache must give the same numbers bit for bit.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdcore.config import load_recipe
from kdcore.engine import Trainer
from kdcore.engine.optim import build_scheduler
from kdcore.loaders import sampler_seed, train_loader
from kdcore.losses import CrossEntropyLoss
from kdcore.objective import build_student_objective
from kdcore.teacher import FrozenTeacher
from kdcore.teacher_cache import CachedTeacher, TeacherCache, ViewKeyed
from medkd.config import OCTRecipe
from medkd.dataset import BScanDataset
from medkd.vertical import oct_network
from medkd.tasks import ClassificationTask
from medkd.transforms import build_augment

from common import goal, synchronize
from oct_data import write_oct_dataset

__all__ = ["P4Pair", "P4Settings", "run_p4", "default_pairs", "quick_pairs"]

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
GOAL = 1.15


@dataclass(frozen=True)
class P4Pair:
    name: str
    recipe: str                  # file in pipelines/ giving the models, loss, optimizer and augmentation
    image_size: int | None       # None: the recipe's
    patients: int                # synthetic patients written (the demo's synthetic settings otherwise)
    batch_size: int | None = None


def default_pairs() -> list[P4Pair]:
    return [P4Pair("demo", "kd_oct_demo.yaml", None, 45),
            P4Pair("kd_oct", "kd_oct_neh.yaml", 128, 12)]


def quick_pairs() -> list[P4Pair]:
    return [P4Pair("demo", "kd_oct_demo.yaml", 48, 4, batch_size=4)]


@dataclass
class P4Settings:
    pairs: list[P4Pair] = field(default_factory=default_pairs)
    warmup_rounds: int = 1
    rounds: int = 7


def _trainer(recipe: OCTRecipe, classes: list[str], device: torch.device, steps: int, teacher: Any) -> Trainer:
    torch.manual_seed(0)  # same initial student for every variant
    student = oct_network(recipe, "student", classes)
    s = recipe.student
    loss = CrossEntropyLoss() if teacher is None else build_student_objective(s)
    task = ClassificationTask(loss.to(device), None, classes, device, teacher)
    trainer = Trainer(student, s.train, task, monitor=s.monitor, mode="max", device=device, seed=recipe.seed,
                      name="student", fold=0)
    trainer.scheduler = build_scheduler(trainer.optimizer, s.train, steps, s.train.epochs)
    return trainer


def _epoch(trainer: Trainer, loader, epoch: int, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    trainer._train_epoch(trainer.model, loader, epoch, in_swa=False)  # the engine's own epoch loop
    synchronize(device)
    return time.perf_counter() - start


def _pair(pair: P4Pair, device: torch.device, settings: P4Settings, tmp: Path) -> dict[str, Any]:
    recipe = load_recipe(OCTRecipe, PIPELINES / pair.recipe, extra={"teacher.pretrained": False,
                                                                     "student.pretrained": False})
    demo = load_recipe(OCTRecipe, PIPELINES / "kd_oct_demo.yaml").data.synthetic
    size = pair.image_size or recipe.data.image_size
    batch = pair.batch_size or recipe.student.train.batch_size
    data = write_oct_dataset(tmp / pair.name, pair.patients, tuple(demo.image_size), seed=demo.seed,
                             scans_per_eye=tuple(demo.scans_per_eye), lesion_strength=demo.lesion_strength,
                             classes=recipe.data.classes or ("NORMAL", "DRUSEN", "CNV"), subset="all")
    classes = data.classes
    epochs = settings.warmup_rounds + settings.rounds

    def loader():
        dataset = BScanDataset(data.records, classes, size, build_augment(recipe.student.augment), cache_decoded=True)
        plain = train_loader(dataset, batch, device, 0, sampler_seed(recipe.seed, "student", 0))
        return torch.utils.data.DataLoader(ViewKeyed(plain.dataset), batch_size=plain.batch_size,
                                           sampler=plain.sampler, drop_last=plain.drop_last)

    torch.manual_seed(1)
    teacher = FrozenTeacher(oct_network(recipe, "teacher", classes).to(device))
    loaders = {name: loader() for name in ("no_kd", "kd_cached", "kd_online")}
    steps = len(loaders["no_kd"])
    images = steps * batch if loaders["no_kd"].drop_last else len(data.records)

    build_start = time.perf_counter()
    cache = TeacherCache.build(tmp / f"{pair.name}_cache", "views", loaders["kd_cached"],
                               lambda x: {"logits": teacher(x)}, epochs=epochs,
                               identity={"benchmark": pair.name}, device=device)
    build_s = time.perf_counter() - build_start
    trainers = {"no_kd": _trainer(recipe, classes, device, steps, None),
                "kd_cached": _trainer(recipe, classes, device, steps, CachedTeacher(cache)),
                "kd_online": _trainer(recipe, classes, device, steps, teacher)}
    seconds: dict[str, list[float]] = {name: [] for name in trainers}
    for epoch in range(epochs):
        for name, trainer in trainers.items():
            elapsed = _epoch(trainer, loaders[name], epoch, device)
            if epoch >= settings.warmup_rounds:
                seconds[name].append(elapsed)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    cached_state, online_state = (trainers[n].model.state_dict() for n in ("kd_cached", "kd_online"))
    identical = all(torch.equal(cached_state[k], online_state[k]) for k in online_state)
    ratio = median["kd_cached"] / median["no_kd"]
    return {"ratio": ratio, **goal(ratio, GOAL, higher_is_better=False),
            "online_ratio": median["kd_online"] / median["no_kd"],
            "epoch_median_s": median, "epochs_s": {n: [round(s, 4) for s in v] for n, v in seconds.items()},
            "cache_build_s": build_s, "cache_build_per_epoch_s": build_s / epochs,
            "cached_equals_online": identical,
            "config": {"recipe": f"pipelines/{pair.recipe}", "teacher": recipe.teacher.model,
                       "student": recipe.student.model, "image_size": size, "batch_size": batch,
                       "images_per_epoch": images, "source_images": len(data.records), "cache_epochs": epochs,
                       "cache_dtype": cache.meta["identity"]["dtype"], "timed_rounds": settings.rounds,
                       "warmup_rounds": settings.warmup_rounds, "pretrained": False, "cache_decoded": True}}


def run_p4(device: torch.device, settings: P4Settings, workdir: str | Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        return {pair.name: _pair(pair, device, settings, Path(tmp)) for pair in settings.pairs}
