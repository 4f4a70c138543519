import numpy as np
import pytest
import timm
import torch

from facekd.augment import build_train_augment
from facekd.dataset import FaceCropDataset
from facekd.vertical import init_head_to_mean_shape
from facekd.formats import load_faces
from facekd.preprocess import to_image_points
from facekd.schemes import get_scheme
from facekd.synth import write_synthetic_faces


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    write_synthetic_faces(root, 8, seed=4, image_size=(128, 128))
    return load_faces(root, "folder")


def test_items_are_normalised_crop_coordinates_that_map_back(records):
    dataset = FaceCropDataset(records, 64, 0.2)
    item = dataset[0]
    assert item["image"].shape == (3, 64, 64) and item["target"].shape == (136,)
    assert 0 < float(item["target"].min()) and float(item["target"].max()) < 1
    back = to_image_points(item["target"].numpy(), item["matrix"].numpy(), 64)
    assert np.allclose(back, records[0].landmarks, atol=1e-3)


def test_seeded_keys_augment_reproducibly_and_int_keys_do_not(records):
    dataset = FaceCropDataset(records, 64, 0.2, pipeline=build_train_augment(64, get_scheme(68)))
    a, b, c = dataset[(1, 7)], dataset[(1, 7)], dataset[(1, 8)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    assert not torch.equal(a["target"], c["target"])
    assert torch.equal(dataset[1]["target"], FaceCropDataset(records, 64, 0.2)[1]["target"])


def test_mean_target_and_mean_shape_head_initialisation(records):
    dataset = FaceCropDataset(records, 64, 0.2)
    mean = dataset.mean_target()
    assert np.allclose(mean, np.mean([dataset[i]["target"].numpy() for i in range(len(dataset))], 0), atol=1e-6)
    model = timm.create_model("test_efficientnet", num_classes=136)
    before = model.get_classifier().weight.detach().clone()
    init_head_to_mean_shape(model, mean)
    assert torch.allclose(model.get_classifier().bias, torch.as_tensor(mean, dtype=torch.float32))
    assert torch.allclose(model.get_classifier().weight, before * 0.1)
    with pytest.raises(ValueError, match="does not fit a mean shape of 10 values"):
        init_head_to_mean_shape(model, np.zeros(10))
