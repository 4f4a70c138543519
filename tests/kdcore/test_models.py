"""Model choices are checked (name, tag, weights file, hub weights) before anything is trained."""

import huggingface_hub
import pytest
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

from kdcore.errors import ConfigError
from kdcore.models import check_model_choice, create_model


def test_unknown_name_and_tag_name_the_recipe_key():
    with pytest.raises(ConfigError, match=r"^student.model: 'mobilenetv2_1000' is not a timm model \(did you mean"):
        check_model_choice("mobilenetv2_1000", key="student")
    with pytest.raises(ConfigError, match=r"teacher.model: 'resnet18.not_a_tag': timm has no pretrained tag "
                                          r"'not_a_tag' for resnet18 \(known: .*a1_in1k"):
        check_model_choice("resnet18.not_a_tag", key="teacher")
    check_model_choice("resnet18.a1_in1k", key="teacher")


def test_missing_weights_file(tmp_path):
    with pytest.raises(ConfigError, match=r"tough.weights: .*nothing.safetensors does not exist"):
        check_model_choice("test_resnet", tmp_path / "nothing.safetensors", key="tough")
    with pytest.raises(ConfigError, match="weights: .* does not exist"):
        create_model("test_resnet", 3, weights=tmp_path / "nothing.safetensors")


def test_hub_weights_are_fetched_like_timm_does(monkeypatch):
    asked = []

    def hub(repo_id, filename, **kwargs):
        asked.append((repo_id, filename))
        if filename == "model.safetensors":
            raise EntryNotFoundError("this repository holds only a .bin")
        return "/cache/pytorch_model.bin"

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub)
    check_model_choice("test_resnet", pretrained=True)
    assert asked == [("timm/test_resnet.r160_in1k", "model.safetensors"),
                     ("timm/test_resnet.r160_in1k", "pytorch_model.bin")]


def test_offline_machine_without_cached_weights_is_told_what_to_set(monkeypatch):
    asked = []

    def offline(repo_id, filename, **kwargs):
        asked.append(filename)
        raise LocalEntryNotFoundError("not cached, hub unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(ConfigError, match=r"student.pretrained: cannot fetch .* set student.weights to a local "
                                          r"file, or student.pretrained: false"):
        check_model_choice("test_efficientnet", key="student", pretrained=True)
    assert asked == ["model.safetensors"]  # offline: no second round of retries for the .bin
