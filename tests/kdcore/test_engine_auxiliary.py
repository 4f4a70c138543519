"""The engine trains a task's auxiliary module (a feature loss's projector) with the model, checkpoints it, and
never writes it into the model's weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdcore.checkpoint import load_checkpoint, load_weights
from kdcore.config import TrainConfig
from kdcore.engine import Trainer
from kdcore.features import FeatureTaps
from kdcore.losses import HintLoss
from tests.kdcore.test_online import Net
from tests.kdcore.toy import ToyImages, toy_loader


class HintTask:
    """CE plus a hint from a fixed random 'teacher feature' of width 5, through a learned projector."""

    def __init__(self, model):
        self.taps = FeatureTaps(model, ("pooled",))
        self.auxiliary = HintLoss().bind((1, 3), (1, 5))
        self.target_feature = torch.randn(5)

    def loss(self, model, batch):
        logits = model(batch["image"])
        feature = self.taps["pooled"]
        hint = self.auxiliary(feature, self.target_feature.expand(len(feature), 5))
        return F.cross_entropy(logits, batch["target"]) + hint, {"hint": hint.detach()}

    def validate(self, model):
        return {"loss": 0.0}

    def inputs(self, batch):
        return batch["image"]


def test_auxiliary_module_is_trained_checkpointed_and_not_exported(tmp_path, one_thread):
    torch.manual_seed(0)
    model = Net(3)
    task = HintTask(model)
    before = task.auxiliary.projector.layer.weight.detach().clone()
    trainer = Trainer(model, TrainConfig(epochs=2, lr=5e-2), task, monitor="loss", mode="min",
                      device=torch.device("cpu"), name="hint", fold=0, output_dir=tmp_path)
    assert [g["name"] for g in trainer.optimizer.param_groups][-1] == "auxiliary"
    state = {}
    trainer._save_checkpoint = lambda s: state.update(payload=trainer.auxiliary.state_dict())  # noqa: E731
    result = trainer.fit(toy_loader(ToyImages(16, seed=1)))
    history = [h for h in result.history if h["split"] == "train"]
    assert history[-1]["hint"] < history[0]["hint"]
    assert not torch.equal(task.auxiliary.projector.layer.weight, before)  # the projector learnt
    assert not any(k.startswith("projector") for k in load_weights(tmp_path / "model.safetensors"))
    assert "projector.layer.weight" in state["payload"]


def test_auxiliary_state_is_in_last_checkpoint(tmp_path, one_thread):
    torch.manual_seed(0)
    model = Net(3)
    task = HintTask(model)
    trainer = Trainer(model, TrainConfig(epochs=1, lr=5e-2), task, monitor="loss", mode="min",
                      device=torch.device("cpu"), name="hint", fold=0, output_dir=tmp_path)
    trainer.fit(toy_loader(ToyImages(8, seed=1)))
    payload = load_checkpoint(tmp_path / "last.pt")
    torch.testing.assert_close(payload["auxiliary"]["projector.layer.weight"], task.auxiliary.projector.layer.weight)


def test_resume_restores_the_auxiliary_module(tmp_path, one_thread):
    config = TrainConfig(epochs=1, lr=5e-2)
    torch.manual_seed(0)
    model = Net(3)
    first = HintTask(model)
    Trainer(model, config, first, monitor="loss", mode="min", device=torch.device("cpu"), name="hint", fold=0,
            output_dir=tmp_path).fit(toy_loader(ToyImages(8, seed=1)))
    trained = first.auxiliary.projector.layer.weight.detach().clone()
    torch.manual_seed(1)
    model2 = Net(3)
    second = HintTask(model2)  # a fresh projector
    assert not torch.equal(second.auxiliary.projector.layer.weight, trained)
    # the checkpoint is after the last planned epoch: fit() only restores it and finishes
    Trainer(model2, config, second, monitor="loss", mode="min", device=torch.device("cpu"), name="hint", fold=0,
            output_dir=tmp_path).fit(toy_loader(ToyImages(8, seed=1)))
    torch.testing.assert_close(second.auxiliary.projector.layer.weight, trained)


def _train_hint_on_rank(rank: int, store: str, out: str) -> None:
    from datetime import timedelta

    import torch.distributed as dist
    from torch.utils.data import DataLoader

    from kdcore.sampling import SeededSampler

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=30))
    try:
        torch.set_num_threads(1)
        torch.manual_seed(0)
        model = Net(3)
        task = HintTask(model)  # same seed: the same projector and target feature on both ranks
        trainer = Trainer(model, TrainConfig(epochs=1, lr=5e-2), task, monitor="loss", mode="min",
                          device=torch.device("cpu"), name="hint", fold=0)
        data = ToyImages(16, seed=rank)  # different images per rank: different local gradients
        trainer.fit(DataLoader(data, batch_size=4, sampler=SeededSampler(len(data), seed=0, rank=rank,
                                                                          world_size=2)))
        torch.save(task.auxiliary.state_dict(), f"{out}/aux{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_auxiliary_gradients_are_averaged_across_ddp_ranks(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_train_hint_on_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    first, second = (torch.load(tmp_path / f"aux{r}.pt", weights_only=True) for r in (0, 1))
    torch.testing.assert_close(first["projector.layer.weight"], second["projector.layer.weight"], rtol=0, atol=0)
