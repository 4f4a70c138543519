"""Engine paths that matter on GPUs, emulated on the CPU: resume across AMP settings and device counts, the
LR schedule under skipped fp16 steps, the weighting of a last partial accumulation group, non-finite fp16 losses.

fp16 autocast and a GradScaler both run on the CPU in torch >= 2.3, so the scaler's bookkeeping is the real one.
"""

import math
import types

import pytest
import torch
import torch.nn.functional as F

from kdcore.config import TrainConfig
from kdcore.engine import Trainer
from kdcore.errors import TrainingError
from kdcore.seeding import rng_state, set_rng_state
from tests.kdcore.toy import TinyNet, ToyImages, ToyTask, toy_loader

CPU = torch.device("cpu")


def make_trainer(tmp_path, config, task=None, amp_dtype=None, model=None):
    torch.manual_seed(0)
    return Trainer(model or TinyNet(), config, task or ToyTask(ToyImages(8, seed=1)), monitor="loss", mode="min",
                   device=CPU, amp_dtype=amp_dtype, seed=0, name="toy", fold=0, output_dir=tmp_path,
                   meta={"arch": "tiny"})


# ------------------------------------------------------------------ 1. resume across AMP settings


@pytest.mark.parametrize("saved, resumed", [(torch.bfloat16, torch.float16), (None, torch.float16),
                                            (torch.float16, torch.bfloat16)])
def test_checkpoint_resumes_under_another_amp_dtype(tmp_path, saved, resumed, caplog):
    config = TrainConfig(epochs=3, lr=1e-2, amp=True)
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path, config, ToyTask(ToyImages(8, seed=1), fail_at_epoch=2), amp_dtype=saved).fit(
            toy_loader(ToyImages(16)))
    assert torch.load(tmp_path / "last.pt", weights_only=True)["amp_dtype"] == str(saved)
    with caplog.at_level("WARNING"):
        result = make_trainer(tmp_path, config, amp_dtype=resumed).fit(toy_loader(ToyImages(16)))
    assert result.epochs_run == 3
    assert f"checkpoint was trained with autocast {saved}, resuming with {resumed}" in caplog.text


def test_fp16_scaler_state_is_restored_when_fp16_resumes_fp16(tmp_path):
    config = TrainConfig(epochs=3, lr=1e-2, amp=True)
    trainer = make_trainer(tmp_path, config, ToyTask(ToyImages(8, seed=1), fail_at_epoch=2), amp_dtype=torch.float16)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(toy_loader(ToyImages(16)))
    saved_scale = torch.load(tmp_path / "last.pt", weights_only=True)["scaler"]["scale"]
    resumed, seen = make_trainer(tmp_path, config, amp_dtype=torch.float16), []
    restore = resumed._restore_scaler

    def spy(payload):
        restore(payload)
        seen.append(resumed.scaler.get_scale())

    resumed._restore_scaler = spy
    resumed.fit(toy_loader(ToyImages(16)))
    assert seen == [saved_scale]


# ------------------------------------------------------------------ 2. resume on fewer visible GPUs


def _fake_cuda(monkeypatch, visible: int) -> dict[int, torch.Tensor]:
    """Pretend ``visible`` CUDA devices exist; their RNG states live in a dict, and a bad ordinal raises as CUDA
    does."""
    states = {i: torch.full((16,), i, dtype=torch.uint8) for i in range(visible)}

    def get_state(device="cuda"):
        index = torch.device(device).index if not isinstance(device, int) else device
        return states[index or 0].clone()

    def set_state(new_state, device="cuda"):
        index = torch.device(device).index if not isinstance(device, int) else device
        index = index or 0
        if index >= visible:
            raise RuntimeError(f"CUDA error: invalid device ordinal {index}")
        states[index] = new_state.clone()

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [get_state(i) for i in range(visible)])
    for module in (torch.cuda, torch.cuda.random):
        monkeypatch.setattr(module, "get_rng_state", get_state)
        monkeypatch.setattr(module, "set_rng_state", set_state)
    return states


def test_rng_state_saved_on_two_gpus_restores_on_one(monkeypatch):
    _fake_cuda(monkeypatch, 2)
    saved = rng_state()
    assert len(saved["cuda"]) == 2
    saved["cuda"] = [torch.full((16,), 7, dtype=torch.uint8), torch.full((16,), 9, dtype=torch.uint8)]
    states = _fake_cuda(monkeypatch, 1)
    set_rng_state(saved)
    assert torch.equal(states[0], saved["cuda"][0])  # the device that remains keeps its stream


def test_rng_state_round_trips_with_an_unchanged_device_count(monkeypatch):
    states = _fake_cuda(monkeypatch, 2)
    saved = rng_state()
    saved["cuda"] = [torch.full((16,), 3, dtype=torch.uint8), torch.full((16,), 5, dtype=torch.uint8)]
    set_rng_state(saved)
    assert [int(states[i][0]) for i in (0, 1)] == [3, 5]


# ------------------------------------------------------------------ 3. LR schedule and skipped fp16 steps


class GradientOverflow(ToyTask):
    """Finite losses, but at the listed calls the gradient becomes infinite, so the GradScaler skips the step."""

    def __init__(self, overflow_calls, **kwargs):
        super().__init__(ToyImages(8, seed=1), **kwargs)
        self.overflow_calls = set(overflow_calls)

    def loss(self, model, batch):
        self.calls += 1
        logits = model(batch["image"])
        if self.calls in self.overflow_calls:
            logits.register_hook(lambda grad: grad * float("inf"))
        return F.cross_entropy(logits.float(), batch["target"]), {}


def expected_factor(config: TrainConfig, steps_per_epoch: int, step: int) -> float:
    """Warmup then cosine, as documented for build_scheduler, written out for the scheduler's ``step`` count."""
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return config.warmup_start_factor + (1 - config.warmup_start_factor) * step / warmup
    floor = config.min_lr / config.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))


def test_scheduler_does_not_advance_on_steps_the_scaler_skipped(tmp_path):
    config = TrainConfig(epochs=2, lr=1e-2, warmup_epochs=1, batch_size=4, amp=True)
    task = GradientOverflow(overflow_calls={2, 3, 6})
    trainer = make_trainer(tmp_path, config, task, amp_dtype=torch.float16)
    result = trainer.fit(toy_loader(ToyImages(16), batch_size=4))  # 4 optimizer steps per epoch, 8 in all
    taken = 8 - 3
    assert trainer.scheduler.last_epoch == taken
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(config.lr * expected_factor(config, 4, taken))
    assert [h["skipped_steps"] for h in result.history] == [2, 1]


# ------------------------------------------------------------------ 4. the last partial accumulation group


class RecordingTask(ToyTask):
    def __init__(self):
        super().__init__(ToyImages(8, seed=1))
        self.batches = []

    def loss(self, model, batch):
        self.batches.append({k: v.clone() for k, v in batch.items()})
        return F.cross_entropy(model(batch["image"]), batch["target"]), {}


@pytest.mark.parametrize("accumulate, n_images", [(3, 16), (2, 12), (4, 8)])
def test_each_accumulation_group_averages_its_own_micro_batches(tmp_path, accumulate, n_images):
    config = TrainConfig(epochs=1, lr=1e-2, accumulate=accumulate, optimizer="sgd", momentum=0.0, weight_decay=0.0)
    task = RecordingTask()
    trainer = make_trainer(tmp_path, config, task)
    seen = []

    def record_step(optimizer, *args, **kwargs):  # keeps the weights fixed: every group's gradient is at the start
        seen.append({n: p.grad.clone() for n, p in trainer.model.named_parameters()})

    trainer.optimizer.step = types.MethodType(record_step, trainer.optimizer)
    trainer.fit(toy_loader(ToyImages(n_images), batch_size=4))
    n_batches = len(task.batches)
    groups = [list(range(start, min(start + accumulate, n_batches))) for start in range(0, n_batches, accumulate)]
    assert len(seen) == len(groups)
    reference = TinyNet()
    reference.load_state_dict(trainer.model.state_dict())
    for grads, group in zip(seen, groups):
        reference.zero_grad()
        total = sum(F.cross_entropy(reference(task.batches[i]["image"]), task.batches[i]["target"]) for i in group)
        (total / len(group)).backward()
        for name, param in reference.named_parameters():
            assert torch.allclose(grads[name], param.grad, atol=1e-6), (group, name)


# ------------------------------------------------------------------ 13. non-finite fp16 losses


def test_fp16_non_finite_loss_is_skipped_and_counted(tmp_path):
    config = TrainConfig(epochs=2, lr=1e-2, batch_size=4, amp=True)

    class OneNaN(ToyTask):
        def loss(self, model, batch):
            loss, logs = super().loss(model, batch)
            return (loss * float("nan") if self.calls == 3 else loss), {}

    trainer = make_trainer(tmp_path, config, OneNaN(ToyImages(8, seed=1)), amp_dtype=torch.float16)
    result = trainer.fit(toy_loader(ToyImages(16), batch_size=4))
    assert [h["skipped_steps"] for h in result.history] == [1, 0]
    assert all(math.isfinite(h["loss"]) for h in result.history)  # the mean is over the finite losses
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_fp16_stops_after_several_non_finite_losses_in_a_row(tmp_path):
    config = TrainConfig(epochs=3, lr=1e-2, batch_size=4, amp=True)
    trainer = make_trainer(tmp_path, config, ToyTask(ToyImages(8, seed=1), nan_at_call=2), amp_dtype=torch.float16)
    with pytest.raises(TrainingError, match=r"5 optimizer steps in a row.*epoch 1"):
        trainer.fit(toy_loader(ToyImages(16), batch_size=4))


def test_full_precision_non_finite_loss_still_stops_at_once(tmp_path):
    trainer = make_trainer(tmp_path, TrainConfig(epochs=2, accumulate=2, batch_size=4),
                           ToyTask(ToyImages(8, seed=1), nan_at_call=3))
    with pytest.raises(TrainingError, match=r"epoch 0, steps 2-3"):
        trainer.fit(toy_loader(ToyImages(16), batch_size=4))
