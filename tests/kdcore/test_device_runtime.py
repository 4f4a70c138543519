"""Device, precision and determinism choices on GPUs, with torch.cuda's answers monkeypatched (no GPU here)."""

import os

import pytest
import torch
from torch import nn

import kdcore.engine.trainer as trainer_module
import kdcore.loaders as loaders
from kdcore.config import TrainConfig
from kdcore.device import autocast_dtype, resolve_device
from kdcore.engine import Trainer
from kdcore.errors import ConfigError
from kdcore.seeding import seed_everything
from tests.kdcore.toy import ToyImages, ToyTask


def test_bf16_only_where_the_gpu_has_it_natively(monkeypatch):
    asked = []

    def is_bf16_supported(including_emulation=True):
        asked.append(including_emulation)
        return including_emulation  # a V100/T4: bf16 only by emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert autocast_dtype(torch.device("cuda"), True, "bfloat16") == torch.float16
    assert asked == [False]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an A100
    assert autocast_dtype(torch.device("cuda"), True, "bfloat16") == torch.bfloat16


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1", "auto"])
def test_each_torchrun_rank_gets_the_gpu_of_its_local_rank(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device(name) == torch.device("cuda", 3)


def test_single_process_keeps_the_named_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.fixture
def restore_determinism(monkeypatch):
    for name in ("benchmark", "deterministic", "allow_tf32"):
        monkeypatch.setattr(torch.backends.cudnn, name, getattr(torch.backends.cudnn, name))
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    precision = torch.get_float32_matmul_precision()
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.set_float32_matmul_precision(precision)


def test_deterministic_true_pins_the_gpu_kernels(restore_determinism):
    seed_everything(0, deterministic=True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == "highest"


def test_deterministic_false_turns_on_autotuning_and_tf32(restore_determinism):
    seed_everything(0, deterministic=True)
    seed_everything(0, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    assert torch.backends.cudnn.benchmark and torch.backends.cudnn.allow_tf32
    assert torch.get_float32_matmul_precision() == "high"


@pytest.mark.parametrize("batch, world, message", [(8, 3, r"student.train.batch_size: 8 does not divide over 3"),
                                                   (8, 8, r"student.train.batch_size: 8 over 8 GPUs leaves 1 image")])
def test_per_gpu_batch_that_ddp_would_change_is_refused(monkeypatch, batch, world, message):
    monkeypatch.setattr(loaders, "world_size", lambda: world)
    with pytest.raises(ConfigError, match=message):
        loaders.train_loader(ToyImages(16), batch, torch.device("cpu"), 0, seed=0, key="student.train.batch_size")


def test_per_gpu_batch_that_divides_is_kept(monkeypatch):
    monkeypatch.setattr(loaders, "world_size", lambda: 4)
    monkeypatch.setattr(loaders, "rank", lambda: 1)
    loader = loaders.train_loader(ToyImages(16), 8, torch.device("cpu"), 0, seed=0)
    assert loader.batch_size == 2


def test_sync_batchnorm_converts_before_the_optimizer_is_built(monkeypatch):
    from tests.kdcore.toy import BatchNormNet

    monkeypatch.setattr(trainer_module, "is_distributed", lambda: True)
    model = BatchNormNet()
    keys, weight = list(model.state_dict()), model.features[1].weight
    trainer = Trainer(model, TrainConfig(), ToyTask(ToyImages(4)), monitor="loss", mode="min",
                      device=torch.device("cpu"), sync_batchnorm=True)
    assert isinstance(trainer.model.features[1], nn.SyncBatchNorm) and trainer.model.features[1].weight is weight
    assert any(p is weight for g in trainer.optimizer.param_groups for p in g["params"])
    assert list(trainer.model.state_dict()) == keys  # checkpoints and final weights keep their keys
