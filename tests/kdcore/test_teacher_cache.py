import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from kdcore.config import TrainConfig
from kdcore.engine import Trainer
from kdcore.errors import TrainingError
from kdcore.losses import build_loss
from kdcore.teacher import FrozenTeacher
from kdcore.teacher_cache import CachedTeacher, TeacherCache, ViewKeyed, pool_loader
from tests.kdcore.toy import ToyImages, toy_loader

IDENTITY = {"teacher_sha256": "a" * 64, "augment": {"noise": 0.1}, "manifest": "m0", "fold": 0}


def make_teacher():
    torch.manual_seed(7)
    return FrozenTeacher(timm.create_model("test_resnet", num_classes=2))


def keyed_loader(n=16, seed=0, batch_size=8):
    loader = toy_loader(ToyImages(n), seed=seed, batch_size=batch_size)
    return torch.utils.data.DataLoader(ViewKeyed(loader.dataset), batch_size=batch_size, sampler=loader.sampler)


class KDTask:
    def __init__(self, teacher):
        self.teacher, self.loss_fn = teacher, build_loss("kd", temperature=4.0, alpha=0.3)

    def loss(self, model, batch):
        logits = model(batch["image"]).float()
        online = not isinstance(self.teacher, CachedTeacher)
        teacher_logits = self.teacher(batch["image"]) if online else self.teacher(batch)
        return self.loss_fn(logits, teacher_logits, batch["target"]), {}

    def validate(self, model):
        images = torch.stack([ToyImages(8, seed=1)[i]["image"] for i in range(8)])
        return {"loss": float(F.cross_entropy(model(images), torch.arange(8) % 2))}

    def inputs(self, batch):
        return batch["image"]


def train_student(tmp_path, teacher, loader, epochs):
    torch.manual_seed(3)
    model = timm.create_model("test_efficientnet", num_classes=2)
    trainer = Trainer(model, TrainConfig(epochs=epochs, lr=1e-2, warmup_epochs=1), KDTask(teacher), monitor="loss",
                      mode="min", device=torch.device("cpu"), seed=0, name="student", fold=0, output_dir=tmp_path)
    return trainer.fit(loader).model


def build(path, loader, teacher, epochs=3, identity=IDENTITY, mode="views", **kwargs):
    return TeacherCache.build(path, mode, loader, lambda x: {"logits": teacher(x)}, epochs=epochs,
                              identity=identity, **kwargs)


def test_student_from_views_cache_equals_online_distillation_bitwise(tmp_path):
    teacher, epochs = make_teacher(), 2
    online = train_student(tmp_path / "online", teacher, keyed_loader(), epochs)
    loader = keyed_loader()
    cache = build(tmp_path / "cache", loader, teacher, epochs)
    assert cache.meta["complete"] and cache.meta["lossless"] and int(cache.filled.sum()) == epochs * 16
    cached = train_student(tmp_path / "cached", CachedTeacher(cache), loader, epochs)
    for key, value in online.state_dict().items():
        assert torch.equal(cached.state_dict()[key], value), key
    images = torch.stack([ToyImages(8, seed=5)[i]["image"] for i in range(8)])
    with torch.no_grad():
        assert torch.equal(online(images), cached(images))


def test_float16_storage_reports_its_rounding(tmp_path):
    cache = build(tmp_path / "c", keyed_loader(), make_teacher(), epochs=1, dtype="float16")
    assert cache.arrays["logits"].dtype == np.float16
    assert not cache.meta["lossless"] and 0 < cache.meta["max_rounding_error"] < 1e-2


@pytest.mark.parametrize("key, value", [("teacher_sha256", "b" * 64), ("augment", {"noise": 0.2}),
                                        ("manifest", "m1")])
def test_mismatching_cache_is_refused_by_name_and_rebuilt(tmp_path, caplog, key, value):
    teacher = make_teacher()
    build(tmp_path / "c", keyed_loader(), teacher, epochs=2)
    calls = []
    counting = lambda x: calls.append(len(x)) or teacher(x)  # noqa: E731
    with caplog.at_level(logging.WARNING, logger="kdcore"):
        cache = build(tmp_path / "c", keyed_loader(), counting, epochs=2, identity={**IDENTITY, key: value})
    assert any("refused" in r.getMessage() and key in r.getMessage() for r in caplog.records), caplog.text
    assert sum(calls) == 2 * 16 and json.loads((tmp_path / "c" / "cache.json").read_text())["identity"][key] == value
    # The same identity again: warm, no teacher call.
    calls.clear()
    build(tmp_path / "c", keyed_loader(), counting, epochs=2, identity={**IDENTITY, key: value})
    assert calls == []


def test_cache_for_another_stream_or_fewer_epochs_is_rebuilt(tmp_path, caplog):
    teacher = make_teacher()
    build(tmp_path / "c", keyed_loader(seed=0), teacher, epochs=2)
    with caplog.at_level(logging.WARNING, logger="kdcore"):
        build(tmp_path / "c", keyed_loader(seed=1), teacher, epochs=2)
        assert "augmentation stream" in caplog.text
        build(tmp_path / "c", keyed_loader(seed=1), teacher, epochs=3)
        assert "holds 2 epochs, the student needs 3" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kdcore"):
        build(tmp_path / "c", keyed_loader(seed=1), teacher, epochs=1)  # fewer epochs: a prefix of the stream
    assert "refused" not in caplog.text


def test_interrupted_build_resumes_where_it_stopped(tmp_path):
    teacher = make_teacher()
    reference = build(tmp_path / "ref", keyed_loader(), teacher, epochs=3)
    calls = []

    def dies_after_three(x):
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        calls.append(len(x))
        return teacher(x)

    with pytest.raises(KeyboardInterrupt):
        build(tmp_path / "c", keyed_loader(), dies_after_three, epochs=3)
    calls.clear()
    resumed = build(tmp_path / "c", keyed_loader(), lambda x: calls.append(len(x)) or teacher(x), epochs=3)
    assert sum(calls) == 3 * 16 - 3 * 8  # only the views not filled before the interruption
    assert np.array_equal(resumed.arrays["logits"], reference.arrays["logits"])


KILLED_BUILD = """
import sys, time, torch
sys.path[:0] = {paths!r}
from tests.kdcore.test_teacher_cache import build, keyed_loader, make_teacher
teacher = make_teacher()
def slow(x):
    time.sleep(0.2)
    return teacher(x)
build({folder!r}, keyed_loader(n=32), slow, epochs=3)
"""


def test_sigkilled_build_resumes(tmp_path):
    folder = str(tmp_path / "c")
    script = KILLED_BUILD.format(paths=sys.path, folder=folder)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd())
    filled = tmp_path / "c" / "filled.npy"
    deadline = time.time() + 60
    while time.time() < deadline and child.poll() is None:
        if filled.exists() and np.load(filled, mmap_mode="r").sum() >= 16:
            break
        time.sleep(0.05)
    assert child.poll() is None, "the build finished or failed before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    done_before = int(np.load(filled).sum())
    assert 16 <= done_before < 3 * 32
    teacher, calls = make_teacher(), []
    resumed = build(folder, keyed_loader(n=32), lambda x: calls.append(len(x)) or teacher(x), epochs=3)
    reference = build(tmp_path / "ref", keyed_loader(n=32), teacher, epochs=3)
    assert sum(calls) == 3 * 32 - done_before
    assert np.array_equal(resumed.arrays["logits"], reference.arrays["logits"])


def test_pool_draws_from_fixed_views_and_finds_their_outputs(tmp_path):
    teacher = make_teacher()
    loader = pool_loader(keyed_loader(), views=2, seed=11)
    cache = build(tmp_path / "p", loader, teacher, mode="pool")
    assert cache.seeds.shape == (2, 16) and int(cache.filled.sum()) == 32
    seen = set()
    for epoch in range(4):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            seen.update(zip(batch["index"].tolist(), batch["view"].tolist()))
            # The pool's teacher outputs are the teacher's outputs for exactly these images.
            assert torch.allclose(cache.lookup(batch)["logits"], teacher(batch["image"]), atol=1e-5)
    assert seen <= {(i, int(cache.seeds[v, i])) for v in range(2) for i in range(16)}
    assert len(seen) > 16  # more than one view of some images


def test_a_view_missing_from_the_cache_is_an_error(tmp_path):
    teacher = make_teacher()
    cache = build(tmp_path / "c", keyed_loader(seed=0), teacher, epochs=1)
    other = keyed_loader(seed=5)
    with pytest.raises(TrainingError, match="not in the cache"):
        cache.lookup(next(iter(other)))
