"""Host synchronisations per optimizer step of the training hot loop, for KD, DKD and NKD students.

    python benchmarks/host_syncs.py                    # CPU: would-be syncs (TorchFunctionMode emulation)
    python benchmarks/host_syncs.py --device cuda      # GPU: real syncs (torch.cuda.set_sync_debug_mode)

One epoch of the real engine (kdcore.engine.Trainer) and medkd's distillation task on in-memory images, a tiny
timm student and a frozen teacher; :func:`measure_host_syncs` is what ``make gpu-check`` calls. The engine's bound is one read per
optimizer step (two more with an fp16 GradScaler) and one per epoch; see tests/kdcore/test_host_syncs.py.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from kdcore.config import TrainConfig
from kdcore.engine import Trainer, build_scheduler
from kdcore.engine.syncs import count_host_syncs
from kdcore.losses import DKDLoss, KDLoss, NKDLoss, WithHardLabel
from kdcore.models import create_model
from kdcore.teacher import FrozenTeacher
from medkd.tasks import ClassificationTask

__all__ = ["measure_host_syncs"]

LOSSES = {"kd": lambda: KDLoss(), "dkd": lambda: WithHardLabel(DKDLoss(), 0.3),
          "nkd": lambda: WithHardLabel(NKDLoss(), 0.3)}


class _Images(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int, classes: int):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, size, size, generator=generator)
        self.targets = torch.arange(n) % classes

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.images[index], "target": self.targets[index]}


def measure_host_syncs(device: str | torch.device = "cpu", amp_dtype: torch.dtype | None = None,
                       losses: tuple[str, ...] = ("kd", "dkd", "nkd"), batches: int = 8, batch_size: int = 8,
                       image_size: int = 64, accumulate: int = 1) -> dict[str, Any]:
    """``{loss: {"syncs", "optimizer_steps", "per_step", "by_call"}}`` for one training epoch on ``device``."""
    device = torch.device(device)
    results: dict[str, Any] = {"device": str(device), "amp_dtype": str(amp_dtype), "accumulate": accumulate}
    for name in losses:
        torch.manual_seed(0)
        teacher = FrozenTeacher(create_model("test_efficientnet", 3).to(device), amp_dtype=amp_dtype)
        student = create_model("test_efficientnet", 3)
        config = TrainConfig(epochs=1, lr=1e-3, accumulate=accumulate, clip_grad_norm=1.0, amp=amp_dtype is not None)
        task = ClassificationTask(LOSSES[name]().to(device), None, ["a", "b", "c"], device, teacher)
        trainer = Trainer(student, config, task, monitor="loss", mode="min", device=device, amp_dtype=amp_dtype, name=name, fold=0)
        loader = torch.utils.data.DataLoader(_Images(batches * batch_size, image_size, 3), batch_size=batch_size,
                                             shuffle=True, pin_memory=device.type == "cuda")
        steps = -(-len(loader) // accumulate)
        trainer.scheduler = build_scheduler(trainer.optimizer, config, steps, 1)
        train_model = trainer._training_module(True)
        trainer._train_epoch(train_model, loader, 0, in_swa=False)  # warm-up: lazy inits, cuDNN autotuning
        with count_host_syncs(device) as syncs:
            trainer._train_epoch(train_model, loader, 1, in_swa=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        results[name] = {"syncs": syncs.count, "optimizer_steps": steps, "micro_batches": len(loader),
                         "per_step": round(syncs.count / steps, 3), "by_call": dict(syncs.by_call),
                         "method": syncs.method}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=["none", "bfloat16", "float16"], default="none")
    parser.add_argument("--accumulate", type=int, default=1)
    args = parser.parse_args(argv)
    amp = None if args.amp == "none" else getattr(torch, args.amp)
    results = measure_host_syncs(args.device, amp, accumulate=args.accumulate)
    for name in LOSSES:
        row = results[name]
        print(f"host syncs {name:>3}: {row['syncs']:3d} in {row['optimizer_steps']} optimizer steps "
              f"({row['per_step']:.2f} per step, {row['micro_batches']} micro-batches) via {row['method']}: "
              f"{row['by_call']}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
