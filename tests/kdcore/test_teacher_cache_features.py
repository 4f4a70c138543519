"""The teacher cache stores a tapped teacher's features beside its logits, and gives them back per batch."""

from __future__ import annotations

import json

import timm
import torch

from kdcore.checkpoint import save_weights
from kdcore.teacher import FrozenTeacher
from kdcore.teacher_cache import CachedTeacher, cached_teacher
from tests.kdcore.toy import ToyImages, toy_loader


def test_cached_features_equal_the_live_teachers(tmp_path, one_thread):
    torch.manual_seed(7)
    net = timm.create_model("test_resnet", num_classes=2)
    weights = tmp_path / "teacher.safetensors"
    save_weights(weights, net.state_dict(), {"arch": "test_resnet"})
    teacher = FrozenTeacher(net, features=("pooled",))
    loader = toy_loader(ToyImages(8), seed=0, batch_size=4)
    cached, keyed, cache = cached_teacher("views", tmp_path, loader, teacher, weights=weights,
                                          identity={"fold": 0}, epochs=1, dtype="float32")
    assert isinstance(cached, CachedTeacher) and cached.feature_paths == ("pooled",)
    meta = json.loads((cache.path / "cache.json").read_text())
    assert meta["identity"]["teacher_features"] == {"logits": ["pooled"]}
    for batch in keyed:
        logits = cached(batch)
        live = teacher(batch["image"])
        torch.testing.assert_close(logits, live)
        torch.testing.assert_close(cached.features["pooled"], teacher.features["pooled"])


def test_logits_only_cache_identity_is_unchanged(tmp_path, one_thread):
    torch.manual_seed(7)
    net = timm.create_model("test_resnet", num_classes=2)
    weights = tmp_path / "teacher.safetensors"
    save_weights(weights, net.state_dict(), {"arch": "test_resnet"})
    loader = toy_loader(ToyImages(4), seed=0, batch_size=4)
    cached, _, cache = cached_teacher("views", tmp_path, loader, FrozenTeacher(net), weights=weights,
                                      identity={"fold": 0}, epochs=1)
    assert "teacher_features" not in json.loads((cache.path / "cache.json").read_text())["identity"]
    assert cached.feature_paths == () and cached.features == {}
