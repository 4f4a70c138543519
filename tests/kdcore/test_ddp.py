"""Two CPU processes with the gloo backend (torchrun) give the metrics of one process."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from tests.medkd.tiny import write_tiny_recipe

# The teacher has BatchNorm and keeps its SWA average, whose statistics are recomputed over the training set at the
# end (the step that saw 1/N of the data on rank 0). Its learning rate is small because on the CPU there is no
# SyncBatchNorm: in training each rank normalises its half-batch, and only a tiny step keeps that from mattering.
# The student is a LayerNorm model trained normally.
# Every eye has 2 B-scans and every B-scan is kept (subset all), so each training part has an even number of images:
# with an odd number the sharded sampler pads one rank with a repeated image (as DistributedSampler does), and the
# two runs would see different epochs.
BATCHNORM_SWA_TEACHER = {"data": {"subset": "all", "synthetic": {"scans_per_eye": [2, 2]}},
                         "teacher": {"model": "test_resnet", "loss": "ce", "class_weights": "none",
                                     "train": {"lr": 1.0e-5, "warmup_epochs": 0,
                                               "swa": {"enabled": True, "start_epoch": 1, "lr": 1.0e-5}}},
                         "student": {"model": "test_convnext"}}


def torchrun() -> str:
    found = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(found).exists():
        pytest.skip("torchrun is not installed")
    return found


def run_in_own_group(command: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``command``; on a timeout kill its whole process group, so no torchrun worker outlives the test."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(command[:3])} ... did not finish in {timeout} s:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_two_process_gloo_run_matches_single_process(tmp_path):
    recipe = write_tiny_recipe(tmp_path, **BATCHNORM_SWA_TEACHER)
    env = {**os.environ, "CI": "1", "OMP_NUM_THREADS": "1"}
    single = run_in_own_group([sys.executable, "-m", "medkd.cli", "run", str(recipe), "--out", str(tmp_path / "one")],
                              env)
    assert single.returncode == 0, single.stderr[-3000:]
    double = run_in_own_group([torchrun(), "--standalone", "--nproc_per_node=2", "-m", "medkd.cli", "run", str(recipe),
                               "--out", str(tmp_path / "two")], env)
    assert double.returncode == 0, double.stdout[-2000:] + double.stderr[-3000:]
    assert "world size 2" in (tmp_path / "two" / "run.log").read_text()

    one = json.loads((tmp_path / "one" / "report.json").read_text())
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    # (Not the teacher's metrics: a teacher that barely trains predicts near-ties, whose argmax, and so accuracy
    # and ECE, flip with the last digit; its predictions are compared below.)
    for model in ("student", "baseline"):
        for fold_one, fold_two in zip(one["models"][model]["folds"], two["models"][model]["folds"]):
            for metric in ("accuracy", "auc", "ece"):
                a, b = fold_one[metric], fold_two[metric]
                assert (a is None and b is None) or abs(a - b) < 0.02, (model, metric, a, b)
    # The gathered predictions themselves agree closely (same samples, same seeds, averaged gradients, and the
    # SWA teacher's BatchNorm statistics from the whole training set on both). The bound is the BatchNorm test's
    # (tests/kdcore/test_ddp_batchnorm.py): each rank still normalises its own half-batch while training (no
    # SyncBatchNorm on the CPU), which moves the teacher by ~1e-3 here; without the SWA fix it moves by ~7e-2.
    import csv

    for model, fold in ((m, k) for m in ("teacher", "student") for k in (0, 1)):
        with open(tmp_path / "one" / "folds" / f"fold_{fold}" / model / "predictions.csv") as f:
            p1 = [float(r["prob_CNV"]) for r in csv.DictReader(f)]
        with open(tmp_path / "two" / "folds" / f"fold_{fold}" / model / "predictions.csv") as f:
            p2 = [float(r["prob_CNV"]) for r in csv.DictReader(f)]
        assert len(p1) == len(p2) and max(abs(a - b) for a, b in zip(p1, p2)) < 2e-3, (model, fold)
    assert json.loads((tmp_path / "two" / "folds" / "fold_0" / "teacher" / "done.json").read_text())["kept"] == "swa"


def _late_rank_one_writes_manifest(rank: int, store: str, run_path: str) -> None:
    import time
    from datetime import timedelta

    import torch.distributed as dist

    from kdcore.cv import make_fold_manifest
    from kdcore.run_setup import manifest_for_run
    from kdcore.run_folder import RunDir

    # A short timeout turns a collective left waiting into an error instead of a hung test.
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=20))
    try:
        manifest = make_fold_manifest([f"p{i}" for i in range(12)], ["a", "b"] * 6, 3, 0.25, seed=0)
        if rank == 1:
            time.sleep(1.5)  # rank 0 has written folds.json by the time this rank looks for it
        stored = manifest_for_run(RunDir(run_path), manifest)
        assert stored.sha == manifest.sha
        gathered = [None, None]
        dist.all_gather_object(gathered, ("after manifest", rank))
        assert gathered == [("after manifest", 0), ("after manifest", 1)], gathered
    finally:
        dist.destroy_process_group()


def test_manifest_for_run_keeps_ranks_in_step_when_one_is_late(tmp_path):
    (tmp_path / "run").mkdir()
    mp.spawn(_late_rank_one_writes_manifest, args=(str(tmp_path / "store"), str(tmp_path / "run")), nprocs=2)
    assert (tmp_path / "run" / "folds.json").exists()


class _RankDependentScores:
    """Rank 0's validation keeps improving, rank 1's keeps getting worse: on their own, with patience 1,
    rank 1 would stop after two epochs while rank 0 trains on, waiting for rank 1's gradients for ever."""

    def __init__(self, rank: int):
        from tests.kdcore.toy import ToyImages, ToyTask

        self.inner, self.rank, self.epoch = ToyTask(ToyImages(8, seed=1)), rank, 0

    def loss(self, model, batch):
        return self.inner.loss(model, batch)

    def inputs(self, batch):
        return batch["image"]

    def validate(self, model):
        self.epoch += 1
        return {"loss": 1.0 / self.epoch if self.rank == 0 else float(self.epoch)}


def _train_with_rank_dependent_validation(rank: int, store: str, out: str) -> None:
    import json
    from datetime import timedelta

    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader

    from kdcore.config import TrainConfig
    from kdcore.engine import Trainer
    from kdcore.sampling import SeededSampler
    from tests.kdcore.toy import TinyNet, ToyImages

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=20))
    try:
        torch.manual_seed(0)
        trainer = Trainer(TinyNet(), TrainConfig(epochs=6, lr=1e-2, patience=1), _RankDependentScores(rank),
                          monitor="loss", mode="min", device=torch.device("cpu"), name="toy", fold=0)
        data = ToyImages(16)
        loader = DataLoader(data, batch_size=4, sampler=SeededSampler(len(data), seed=0, rank=rank, world_size=2))
        result = trainer.fit(loader)
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump({"epochs_run": result.epochs_run, "best_epoch": result.best_epoch}, f)
    finally:
        dist.destroy_process_group()


def test_ranks_take_rank_zeros_validation_so_they_stop_together(tmp_path):
    mp.spawn(_train_with_rank_dependent_validation, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    outcomes = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert outcomes[0] == outcomes[1] == {"epochs_run": 6, "best_epoch": 5}
