"""A tiny classification problem, task and models for engine tests (not a test module)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from kdcore.sampling import SeededSampler, split_key


class ToyImages(Dataset):
    """Two classes of 3x24x24 noise images that differ in brightness; seeded keys add augmentation noise."""

    def __init__(self, n: int = 24, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.targets = np.arange(n) % 2
        self.images = (rng.normal(0, 1, (n, 3, 24, 24)) + self.targets[:, None, None, None]).astype(np.float32)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, key):
        index, seed = split_key(key)
        image = self.images[index]
        if seed is not None:
            image = image + np.random.default_rng(seed).normal(0, 0.1, image.shape).astype(np.float32)
        return {"image": torch.from_numpy(image), "target": int(self.targets[index])}


class ToyTask:
    """Cross-entropy task that records the parameters it sees at each validation (for SWA checks)."""

    def __init__(self, val: ToyImages, nan_at_call: int | None = None, fail_at_epoch: int | None = None):
        self.val = val
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.calls = 0
        self.nan_at_call = nan_at_call
        self.fail_at_epoch = fail_at_epoch

    def loss(self, model, batch):
        self.calls += 1
        logits = model(batch["image"])
        loss = F.cross_entropy(logits.float(), batch["target"])
        if self.nan_at_call is not None and self.calls >= self.nan_at_call:
            loss = loss * float("nan")
        return loss, {"ce": float(loss.detach())}

    def validate(self, model):
        if self.fail_at_epoch is not None and len(self.snapshots) == self.fail_at_epoch:
            raise KeyboardInterrupt("simulated crash")
        self.snapshots.append({k: v.detach().clone() for k, v in model.named_parameters()})
        loader = DataLoader(self.val, batch_size=8)
        losses = [F.cross_entropy(model(b["image"]), b["target"], reduction="sum").item() for b in loader]
        return {"loss": sum(losses) / len(self.val)}

    def inputs(self, batch):
        return batch["image"]


def toy_loader(dataset: ToyImages, seed: int = 0, batch_size: int = 8) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=SeededSampler(len(dataset), seed=seed))


class TinyNet(torch.nn.Module):
    """The smallest model the engine accepts (a head it can find), so compiling stays quick."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                            torch.nn.Flatten())
        self.classifier = torch.nn.Linear(4, 2)

    def get_classifier(self):
        return self.classifier

    def forward(self, x):
        return self.classifier(self.features(x))


class BatchNormNet(torch.nn.Module):
    """TinyNet with a BatchNorm layer: what SyncBatchNorm and the SWA statistics update act on."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
                                            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.classifier = torch.nn.Linear(6, 2)

    def get_classifier(self):
        return self.classifier

    def forward(self, x):
        return self.classifier(self.features(x))
