"""Host synchronisations of the training hot loop, counted on the CPU by kdcore.engine.syncs (emulation).

Bound, derived from the loop's design: per optimizer step one read (is the group's loss finite?); with an fp16
GradScaler two more (GradScaler.step reads its found-inf flag, the engine reads the new scale to know whether
the step was taken); per epoch one (the running sums). Nothing per micro-batch. Before this bound the loop read
5 values per micro-batch with KD and 9 with DKD/NKD.
"""

import pytest
import torch
import torch.nn.functional as F

from kdcore.config import TrainConfig
from kdcore.engine import Trainer, build_scheduler
from kdcore.engine.syncs import count_host_syncs
from kdcore.losses import DKDLoss, KDLoss, NKDLoss, WithHardLabel
from kdcore.teacher import FrozenTeacher
from tests.kdcore.toy import TinyNet, ToyImages, toy_loader

PER_EPOCH = 1


class DistillTask:
    """Online distillation from a frozen teacher, as the verticals do it; extras stay tensors."""

    def __init__(self, loss_fn):
        torch.manual_seed(1)
        self.teacher, self.loss_fn = FrozenTeacher(TinyNet()), loss_fn

    def loss(self, model, batch):
        logits = model(batch["image"]).float()
        teacher_logits = self.teacher(batch["image"])
        agreement = (teacher_logits.argmax(1) == logits.detach().argmax(1)).float().mean()
        return self.loss_fn(logits, teacher_logits, batch["target"]), {"teacher_agreement": agreement}

    def validate(self, model):
        return {"loss": 0.0}

    def inputs(self, batch):
        return batch["image"]


def syncs_of_one_epoch(loss_fn, accumulate=1, amp_dtype=None, n_images=24, batch_size=4):
    config = TrainConfig(epochs=1, lr=1e-2, accumulate=accumulate, clip_grad_norm=1.0, amp=amp_dtype is not None)
    torch.manual_seed(0)
    trainer = Trainer(TinyNet(), config, DistillTask(loss_fn), monitor="loss", mode="min", device=torch.device("cpu"),
                      amp_dtype=amp_dtype, name="toy", fold=0)
    loader = toy_loader(ToyImages(n_images), batch_size=batch_size)
    steps = -(-len(loader) // accumulate)
    trainer.scheduler = build_scheduler(trainer.optimizer, config, steps, 1)
    train_model = trainer._training_module(True)
    with count_host_syncs() as syncs:
        record = trainer._train_epoch(train_model, loader, 0, in_swa=False)
    return syncs, steps, record


@pytest.mark.parametrize("loss_fn", [KDLoss(), WithHardLabel(DKDLoss(), 0.3), WithHardLabel(NKDLoss(), 0.3)],
                         ids=["kd", "dkd", "nkd"])
@pytest.mark.parametrize("accumulate", [1, 2])
def test_hot_loop_reads_the_device_once_per_optimizer_step(loss_fn, accumulate):
    syncs, steps, record = syncs_of_one_epoch(loss_fn, accumulate)
    print(f"host syncs: {syncs.count} for {steps} optimizer steps ({dict(syncs.by_call)})")
    assert syncs.count <= steps + PER_EPOCH, dict(syncs.by_call)
    assert 0 <= record["teacher_agreement"] <= 1 and record["loss"] > 0


def test_fp16_hot_loop_bound():
    syncs, steps, _ = syncs_of_one_epoch(KDLoss(), amp_dtype=torch.float16)
    assert syncs.count <= 3 * steps + PER_EPOCH, dict(syncs.by_call)


def test_counter_sees_the_reads_it_is_meant_to_see():
    x = torch.randn(4, 3)
    with count_host_syncs() as syncs:
        float(x.sum()), int(x.argmax()), bool(x.sum() > 0), x.tolist(), x[x > 0], torch.nonzero(x)
        F.softmax(x, dim=1).gather(1, torch.zeros(4, 1, dtype=torch.long))  # stays on the device
    assert syncs.count == 6, dict(syncs.by_call)
