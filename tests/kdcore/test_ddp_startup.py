"""DDP decisions every rank must share: rank 0 decides the run folder and the resume check after the process group
exists; a run folder that the other ranks cannot see (no shared filesystem) stops every rank at the start; one
rank's non-finite loss stops every rank. Each case would otherwise leave ranks waiting for each other."""

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import torch.multiprocessing as mp


def _init(rank: int, store: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=20))


def _run_command(rank: int, store: str, folder: str) -> None:
    import argparse

    import torch.distributed as dist

    from kdcore.cli import add_run_command, run_main
    from kdcore.config import RuntimeConfig, Section

    class Recipe(Section):
        name: str = "race"
        seed: int = 0
        runtime: RuntimeConfig = RuntimeConfig(device="cpu")

    def pipeline(recipe, out, folds, resume):
        out = Path(out)
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.yaml").write_text("name: race\n")
        dist.barrier()
        return argparse.Namespace(path=out)

    def build_parser():
        parser = argparse.ArgumentParser()
        add_run_command(parser.add_subparsers(), "tool", lambda: Recipe, lambda: pipeline, lambda r: 1, "run", "")
        return parser

    _init(rank, store)
    try:
        Recipe.model_rebuild()
        outcomes = {}
        for variant, extra in (("default", []), ("given", ["--out", str(Path(folder, "given", "run"))])):
            os.chdir(Path(folder, variant))
            if rank == 1:
                time.sleep(2.0)  # a slow rank: rank 0 has written config.yaml (and stamped its folder) by now
            code = run_main(build_parser, ["run", str(Path(folder, "recipe.yaml")), *extra])
            runs = sorted(str(p) for p in Path(folder, variant).rglob("config.yaml"))
            outcomes[variant] = {"code": code, "runs": runs}
            dist.barrier()
        Path(folder, f"rank{rank}.json").write_text(json.dumps(outcomes))
    finally:
        dist.destroy_process_group()


def test_a_slow_rank_neither_refuses_the_new_run_nor_picks_its_own_folder(tmp_path):
    (tmp_path / "recipe.yaml").write_text("name: race\n")
    for variant in ("default", "given"):
        (tmp_path / variant).mkdir()
    mp.spawn(_run_command, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    outcomes = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for variant in ("default", "given"):
        assert [o[variant]["code"] for o in outcomes] == [0, 0], variant
        assert len(outcomes[0][variant]["runs"]) == 1, outcomes  # one run folder for both ranks
        assert outcomes[0][variant]["runs"] == outcomes[1][variant]["runs"]


def _check_folder(rank: int, store: str, folder: str) -> None:
    import torch.distributed as dist

    from kdcore.errors import KDError
    from kdcore.run_setup import check_shared_folder

    _init(rank, store)
    try:
        outcomes = []
        # one folder both ranks see; then rank 1 looks at another folder: what a node without the shared
        # filesystem sees
        for folders in (["shared", "shared"], ["node0", "node1"]):
            try:
                check_shared_folder(Path(folder, folders[rank]))
                outcomes.append("ok")
            except KDError as exc:
                outcomes.append(str(exc))
        outcomes.append(_train_with_nan_on_rank_one(rank))
        Path(folder, f"rank{rank}.json").write_text(json.dumps(outcomes))
    finally:
        dist.destroy_process_group()


def _train_with_nan_on_rank_one(rank: int) -> str:
    import torch
    from torch.utils.data import DataLoader

    from kdcore.config import TrainConfig
    from kdcore.engine import Trainer
    from kdcore.errors import TrainingError
    from kdcore.sampling import SeededSampler
    from tests.kdcore.toy import TinyNet, ToyImages, ToyTask

    torch.manual_seed(0)
    task = ToyTask(ToyImages(8, seed=1), nan_at_call=3 if rank == 1 else None)
    trainer = Trainer(TinyNet(), TrainConfig(epochs=3, lr=1e-2), task, monitor="loss", mode="min",
                      device=torch.device("cpu"), name="toy", fold=0)
    data = ToyImages(16)
    try:
        trainer.fit(DataLoader(data, batch_size=4, sampler=SeededSampler(len(data), seed=0, rank=rank, world_size=2)))
    except TrainingError as exc:
        return str(exc)
    return "trained on"


def test_what_one_rank_sees_stops_every_rank(tmp_path):
    for name in ("shared", "node0", "node1"):
        (tmp_path / name).mkdir()
    mp.spawn(_check_folder, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    for r in (0, 1):
        shared, split, nan = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert shared == "ok"
        assert "rank 1 on" in split and "filesystem every node shares" in split, split
        assert "non-finite loss at epoch 1, step 0" in nan, nan  # rank 1's third batch; rank 0 stops with it
    assert list((tmp_path / "shared").iterdir()) == []  # the probe is removed
