"""DDP with BatchNorm and SWA: two gloo ranks give the model of one process; TensorBoard is written by rank 0 only;
the DDP wrapper of frozen-backbone epochs is replaced, without find_unused_parameters, when the backbone thaws."""

from datetime import timedelta

import torch
import torch.multiprocessing as mp
from torch import nn

from kdcore.config import TrainConfig
from tests.kdcore.toy import BatchNormNet, ToyImages, ToyTask

# A small learning rate keeps the per-rank BatchNorm of the training forward (each rank normalises its half of
# the batch) from mattering; the statistics SWA recomputes at the end are what this test is about.
CONFIG = dict(epochs=3, lr=1e-3, batch_size=8, freeze_backbone_epochs=1,
              swa={"enabled": True, "start_epoch": 1, "lr": 1e-3})


def train(rank: int, world: int, out: str, store: str | None = None) -> None:
    import torch.distributed as dist
    from torch.utils.data import DataLoader

    from kdcore.engine import Trainer
    from kdcore.logs import TensorBoardLogger
    from kdcore.sampling import SeededSampler

    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                                timeout=timedelta(seconds=30))
    try:
        torch.manual_seed(0)
        data = ToyImages(32, seed=3)
        # brighter images in the second half: shards that each saw only part of the data would disagree
        data.images[16:] += 2.0
        trainer = Trainer(BatchNormNet(), TrainConfig(**CONFIG), ToyTask(ToyImages(8, seed=1)), monitor="loss",
                          mode="min", device=torch.device("cpu"), name="bn", fold=0,
                          tensorboard=TensorBoardLogger(f"{out}/tb_rank{rank}"))
        loader = DataLoader(data, batch_size=CONFIG["batch_size"] // world,
                            sampler=SeededSampler(len(data), seed=0, rank=rank, world_size=world))
        result = trainer.fit(loader)
        wrapper = trainer.train_model
        probe = torch.from_numpy(ToyImages(8, seed=5).images)
        with torch.no_grad():
            probs = torch.softmax(result.model.eval()(probe), dim=1)
        torch.save({"probs": probs, "state": result.model.state_dict(), "kept": result.kept,
                    "find_unused": getattr(wrapper, "find_unused_parameters", None),
                    "ddp": isinstance(wrapper, nn.parallel.DistributedDataParallel)},
                   f"{out}/world{world}_rank{rank}.pt")
    finally:
        if world > 1:
            dist.destroy_process_group()


def test_two_ranks_with_batchnorm_and_swa_match_one_process(tmp_path):
    train(0, 1, str(tmp_path))
    mp.spawn(train, args=(2, str(tmp_path), str(tmp_path / "store")), nprocs=2)
    one = torch.load(tmp_path / "world1_rank0.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"world2_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert one["kept"] == ranks[0]["kept"] == "swa"
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key  # the ranks hold one model
    for name in ("features.1.running_mean", "features.1.running_var"):
        assert torch.allclose(ranks[0]["state"][name], one["state"][name], rtol=0.02, atol=1e-3), name
    assert (ranks[0]["probs"] - one["probs"]).abs().max() < 2e-3
    # the wrapper of the thawed epochs is a DDP without find_unused_parameters
    assert ranks[0]["ddp"] and ranks[0]["find_unused"] is False
    # only rank 0 wrote TensorBoard events
    assert any((tmp_path / "tb_rank0").iterdir()) and not (tmp_path / "tb_rank1").exists()
