"""Feature taps by forward hooks, the projector, and the frozen teacher's features in one forward pass."""

from __future__ import annotations

import pytest
import timm
import torch

from kdcore.errors import ConfigError
from kdcore.features import FeatureTaps, Projector
from kdcore.teacher import FrozenTeacher


@pytest.fixture(params=["test_efficientnet", "resnet10t"])
def model(request):
    torch.manual_seed(0)
    return timm.create_model(request.param, pretrained=False, num_classes=3).eval()


def test_pooled_is_the_classifier_input_and_forward_is_not_rewritten(model):
    images = torch.randn(2, 3, 32, 32)
    taps = FeatureTaps(model, ("pooled",))
    assert "forward" not in vars(model)  # hooks only
    logits = model(images)
    expected = model.forward_head(model.forward_features(images), pre_logits=True)
    torch.testing.assert_close(taps["pooled"], expected)
    torch.testing.assert_close(model.get_classifier()(taps["pooled"]), logits)
    taps.remove()
    model(images)
    assert taps.features == {}  # removed hooks record nothing


def test_module_path_records_that_module_output():
    model = timm.create_model("resnet10t", num_classes=3).eval()
    images = torch.randn(2, 3, 32, 32)
    with FeatureTaps(model, ("layer2", "pooled")) as taps:
        model(images)
        x = model.maxpool(model.act1(model.bn1(model.conv1(images))))
        torch.testing.assert_close(taps["layer2"], model.layer2(model.layer1(x)))
    assert not model._forward_hooks and not model.layer2._forward_hooks  # the context removed them


def test_stage_paths_follow_timm_feature_info():
    model = timm.create_model("resnet10t", num_classes=3).eval()
    with FeatureTaps(model, ("stage:-2", "layer3")) as taps:
        model(torch.randn(1, 3, 32, 32))
        torch.testing.assert_close(taps["stage:-2"], taps["layer3"])
    with pytest.raises(ConfigError, match="feature 'stage:9': ResNet has 5 stages"):
        FeatureTaps(model, ("stage:9",))


def test_unknown_path_names_it_and_close_matches():
    model = timm.create_model("resnet10t", num_classes=3)
    with pytest.raises(ConfigError, match=r"feature 'layer5': no module at this path in ResNet \(closest: layer"):
        FeatureTaps(model, ("pooled", "layer5"))
    assert not model.get_classifier()._forward_pre_hooks  # nothing registered when a path is bad
    with pytest.raises(KeyError, match="was not recorded"):
        FeatureTaps(model, ("pooled",))["pooled"]


def test_taps_keep_the_graph_so_a_feature_loss_trains_the_model():
    model = timm.create_model("resnet10t", num_classes=3).train()
    taps = FeatureTaps(model, ("pooled",))
    model(torch.randn(2, 3, 32, 32))
    taps["pooled"].pow(2).mean().backward()
    assert model.conv1[0].weight.grad is not None and model.fc.weight.grad is None


def test_frozen_teacher_returns_logits_and_features_in_one_forward_pass():
    torch.manual_seed(1)
    net = timm.create_model("test_efficientnet", num_classes=3)
    calls = []
    net.conv_stem.register_forward_hook(lambda *_: calls.append(1))
    teacher = FrozenTeacher(net, features=("pooled", "blocks.1"))
    images = torch.randn(3, 3, 32, 32)
    logits = teacher(images)
    assert isinstance(logits, torch.Tensor) and len(calls) == 1
    features = teacher.features
    assert set(features) == {"pooled", "blocks.1"} and not features["pooled"].requires_grad
    plain = FrozenTeacher(net)
    torch.testing.assert_close(plain(images), logits)  # the untapped call is unchanged
    assert plain.features == {}
    # the features can be saved for a student's backward pass (not inference tensors)
    student_feature = torch.randn(3, features["pooled"].shape[1], requires_grad=True)
    (student_feature * features["pooled"]).sum().backward()
    logits2, features2 = teacher.forward_with_features(images)
    torch.testing.assert_close(features2["pooled"], features["pooled"])


def test_projector_is_not_part_of_the_student_state_dict():
    student = timm.create_model("resnet10t", num_classes=3)
    keys = set(student.state_dict())
    projector = Projector.for_shapes((2, 512), (2, 256))
    FeatureTaps(student, ("pooled",))
    assert set(student.state_dict()) == keys and isinstance(projector.layer, torch.nn.Linear)
