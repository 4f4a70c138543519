import math

import pytest
import timm
import torch

from kdcore.checkpoint import load_weights
from kdcore.config import TrainConfig
from kdcore.engine import Trainer
from kdcore.errors import TrainingError
from tests.kdcore.toy import TinyNet, ToyImages, ToyTask, toy_loader


def make_model(seed: int = 0):
    torch.manual_seed(seed)
    return timm.create_model("test_efficientnet", num_classes=2)


def fit(tmp_path, config: TrainConfig, task=None, resume=True, seed=0, amp_dtype=None):
    task = task or ToyTask(ToyImages(8, seed=1))
    trainer = Trainer(make_model(), config, task, monitor="loss", mode="min", device=torch.device("cpu"),
                      amp_dtype=amp_dtype, seed=seed, name="toy", fold=0, output_dir=tmp_path, meta={"arch": "t"})
    return trainer.fit(toy_loader(ToyImages(16), seed=seed), resume=resume), task


def test_fit_writes_final_weights_and_history(tmp_path):
    result, _ = fit(tmp_path, TrainConfig(epochs=3, batch_size=8, lr=1e-2, warmup_epochs=1))
    assert result.epochs_run == 3 and result.kept == "best"
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    saved = load_weights(tmp_path / "model.safetensors")
    for key, value in result.model.state_dict().items():
        assert torch.equal(saved[key], value), key


def test_swa_model_is_the_model_saved(tmp_path):
    config = TrainConfig(epochs=4, lr=1e-2, swa={"enabled": True, "start_epoch": 1, "lr": 5e-3})
    result, task = fit(tmp_path, config)
    assert result.kept == "swa"
    # Validation sees the live model after each epoch: epochs 1..3 are the ones averaged.
    averaged = task.snapshots[1:4]
    saved = load_weights(tmp_path / "model.safetensors")
    for name in averaged[0]:
        expected = torch.stack([s[name] for s in averaged]).mean(0)
        assert torch.allclose(saved[name], expected, atol=1e-6), name
    # ... and not the last epoch's weights.
    last = task.snapshots[3]
    assert any(not torch.allclose(saved[n], last[n]) for n in last)


def test_resume_after_crash_gives_identical_result(tmp_path):
    config = TrainConfig(epochs=4, lr=1e-2, warmup_epochs=1, swa={"enabled": True, "start_epoch": 2})
    reference, _ = fit(tmp_path / "ref", config)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "crash", config, task=ToyTask(ToyImages(8, seed=1), fail_at_epoch=3))
    assert (tmp_path / "crash" / "last.pt").exists()
    resumed, _ = fit(tmp_path / "crash", config)
    assert resumed.epochs_run == 4
    for key, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in reference.history]


def test_same_seed_same_metrics_other_seed_differs(tmp_path):
    config = TrainConfig(epochs=2, lr=1e-2)
    a, _ = fit(tmp_path / "a", config, seed=3)
    b, _ = fit(tmp_path / "b", config, seed=3)
    c, _ = fit(tmp_path / "c", config, seed=4)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert [h["loss"] for h in a.history] != [h["loss"] for h in c.history]


def test_non_finite_loss_names_epoch_and_step(tmp_path):
    with pytest.raises(TrainingError, match=r"epoch 1, step 0"):
        fit(tmp_path, TrainConfig(epochs=3), task=ToyTask(ToyImages(8), nan_at_call=3))


def test_frozen_backbone_epochs_only_train_the_head(tmp_path):
    task = ToyTask(ToyImages(8))
    torch.manual_seed(0)
    initial = {k: v.clone() for k, v in make_model().named_parameters()}
    fit(tmp_path, TrainConfig(epochs=2, lr=1e-2, freeze_backbone_epochs=1, weight_decay=0.1), task=task)
    after_first = task.snapshots[0]
    changed = {k for k in initial if not torch.equal(initial[k], after_first[k])}
    assert changed == {"classifier.weight", "classifier.bias"}
    assert any(not torch.equal(after_first[k], task.snapshots[1][k]) for k in initial if k.startswith("conv_stem"))


def test_early_stopping_keeps_best_epoch(tmp_path):
    class Worsening(ToyTask):
        def validate(self, model):
            super().validate(model)
            return {"loss": float(len(self.snapshots))}  # gets worse every epoch

    task = Worsening(ToyImages(8))
    result, _ = fit(tmp_path, TrainConfig(epochs=10, patience=2), task=task)
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 0
    for key, value in task.snapshots[0].items():
        assert torch.equal(result.model.state_dict()[key], value)


def test_plateau_before_swa_starts_the_swa_phase(tmp_path):
    class Worsening(ToyTask):
        def validate(self, model):
            super().validate(model)
            return {"loss": float(len(self.snapshots))}

    config = TrainConfig(epochs=10, patience=2, swa={"enabled": True, "start_epoch": 8})
    result, _ = fit(tmp_path, config, task=Worsening(ToyImages(8)))
    # plateau after epoch 2 -> SWA phase of 10-8=2 epochs (3 and 4) -> 5 epochs in all.
    assert result.kept == "swa" and result.epochs_run == 5
    assert len(result.notes) == 1 and "started early, at epoch 3" in result.notes[0]


def test_plateau_before_swa_can_stop_training_and_says_so(tmp_path):
    class Worsening(ToyTask):
        def validate(self, model):
            super().validate(model)
            return {"loss": float(len(self.snapshots))}

    config = TrainConfig(epochs=10, patience=2, swa={"enabled": True, "start_epoch": 8, "on_plateau": "stop"})
    result, _ = fit(tmp_path, config, task=Worsening(ToyImages(8)))
    assert result.kept == "best" and result.stopped_early and result.epochs_run == 3
    assert len(result.notes) == 1 and "stopped at epoch 2 before the SWA phase" in result.notes[0]


def _lrs(config: TrainConfig, steps_per_epoch: int, epochs: int) -> list[float]:
    from kdcore.engine import build_scheduler

    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    scheduler = build_scheduler(sgd, config, steps_per_epoch, config.epochs)
    lrs = []
    for _ in range(epochs):
        lrs.append(sgd.param_groups[0]["lr"])
        for _ in range(1 if config.schedule_per == "epoch" else steps_per_epoch):
            sgd.step()
            scheduler.step()
    return lrs


def test_epoch_schedule_is_kd_octs_lambda():
    # KD-OCT's cosine_with_warmup_lambda, transliterated: (e + 1) / W, then cosine over all epochs to min_lr
    def kd_oct(epoch, total=150, warmup=10, min_lr=1e-7, base_lr=1e-4):
        if epoch < warmup:
            return (epoch + 1) / max(1, warmup)
        progress = (epoch - warmup) / max(1, total - warmup)
        return min_lr / base_lr + (1.0 - min_lr / base_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    config = TrainConfig(epochs=150, warmup_epochs=10, warmup_start_factor=None, schedule_per="epoch",
                         schedule_epochs=150, min_lr=1e-7, swa={"enabled": True, "start_epoch": 100})
    assert _lrs(config, 7, 100) == pytest.approx([1e-4 * kd_oct(e) for e in range(100)], rel=1e-12)


def test_inverse_time_decay_is_keras_legacy_decay():
    config = TrainConfig(epochs=3, schedule="inverse_time", lr_decay=1e-2, warmup_epochs=0)
    lrs = _lrs(config, 5, 3)  # Keras: lr / (1 + decay * iterations), iterations counted before the update
    assert lrs == pytest.approx([1e-4 / (1 + 1e-2 * 5 * e) for e in range(3)], rel=1e-12)


def test_weight_decay_on_every_parameter_when_asked():
    from kdcore.engine import build_optimizer

    model = make_model()
    filtered = build_optimizer(model, TrainConfig(weight_decay=0.05))
    everything = build_optimizer(model, TrainConfig(weight_decay=0.05, filter_bias_and_bn=False))
    assert any(g["weight_decay"] == 0.0 for g in filtered.param_groups)
    assert all(g["weight_decay"] == 0.05 for g in everything.param_groups)
    assert sum(len(g["params"]) for g in everything.param_groups) == len(list(model.parameters()))


def test_bf16_autocast_on_cpu(tmp_path):
    result, _ = fit(tmp_path, TrainConfig(epochs=1, amp=True), amp_dtype=torch.bfloat16)
    assert math.isfinite(result.history[0]["loss"])


class LinearNet(torch.nn.Module):
    """Two linear layers, no normalisation: a batch's gradient does not depend on how it is split."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 24 * 24, 4))
        self.classifier = torch.nn.Linear(4, 2)

    def get_classifier(self):
        return self.classifier

    def forward(self, x):
        return self.classifier(self.features(x))


def plain_sgd(**changes) -> TrainConfig:
    """One epoch of SGD without momentum, decay or schedule: the update is exactly ``-lr * gradient``."""
    return TrainConfig(**{"epochs": 1, "optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0, "lr": 0.05,
                          "schedule": "constant", "warmup_epochs": 0, **changes})


def sgd_update(config: TrainConfig, n_items: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The initial and the trained parameters of LinearNet, each flattened into one vector."""
    model = LinearNet()
    initial = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    trainer = Trainer(model, config, ToyTask(ToyImages(4, seed=1)), monitor="loss", mode="min",
                      device=torch.device("cpu"), seed=0, name="linear", fold=0)
    trained = trainer.fit(toy_loader(ToyImages(n_items), seed=0, batch_size=batch_size)).model
    return initial, torch.nn.utils.parameters_to_vector(trained.parameters()).detach()


def test_gradient_accumulation_of_two_micro_batches_is_one_double_batch():
    _, accumulated = sgd_update(plain_sgd(accumulate=2), n_items=16, batch_size=4)
    _, double_batch = sgd_update(plain_sgd(), n_items=16, batch_size=8)
    _, small_batches = sgd_update(plain_sgd(), n_items=16, batch_size=4)
    assert torch.allclose(accumulated, double_batch, rtol=0, atol=1e-6)
    # the control: stepping after every micro-batch (four steps instead of two) lands elsewhere
    assert not torch.allclose(accumulated, small_batches, rtol=0, atol=1e-4)


def test_clipping_bounds_the_gradient_norm_and_keeps_its_direction():
    lr = plain_sgd().lr
    initial, unclipped = sgd_update(plain_sgd(), n_items=8, batch_size=8)  # one optimizer step
    gradient = (initial - unclipped) / lr
    max_norm = float(gradient.norm()) / 4
    _, clipped = sgd_update(plain_sgd(clip_grad_norm=max_norm), n_items=8, batch_size=8)
    clipped_gradient = (initial - clipped) / lr
    assert float(clipped_gradient.norm()) <= max_norm * (1 + 1e-4)
    assert not torch.allclose(clipped, unclipped, rtol=0, atol=1e-4)
    torch.testing.assert_close(clipped_gradient, gradient * (max_norm / gradient.norm()), rtol=1e-4, atol=1e-6)
    # a bound above the gradient's norm leaves the step alone
    _, loose = sgd_update(plain_sgd(clip_grad_norm=float(gradient.norm()) * 2), n_items=8, batch_size=8)
    torch.testing.assert_close(loose, unclipped, rtol=0, atol=1e-7)


def test_compiled_training_forward_matches_eager():
    results = []
    for compile_model in (False, True):
        torch.manual_seed(0)
        trainer = Trainer(TinyNet(), TrainConfig(epochs=1, lr=1e-2), ToyTask(ToyImages(8, seed=1)), monitor="loss",
                          mode="min", device=torch.device("cpu"), seed=0, name="tiny", fold=0,
                          compile_model=compile_model)
        results.append(trainer.fit(toy_loader(ToyImages(16), seed=0)).history[0]["loss"])
    assert abs(results[0] - results[1]) < 1e-5
