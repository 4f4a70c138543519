"""The facekd paper recipes against aliprf/KD-Loss (cnn_model.py, teacher_trainer.py, student_train.py), read by hand,
through `facekd config` as a user would see them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import facekd.cli

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("recipe", ["face_kd_300w.yaml", "face_kd_wflw.yaml", "face_kd_cofw.yaml"])
def test_face_recipes_equal_the_authors_code(capsys, recipe):
    assert facekd.cli.main(["config", str(REPO / "pipelines" / recipe)]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    for role in ("tough", "tolerant", "student"):
        section = config[role]
        assert section["pretrained"] is False, role  # weights=None: from scratch
        train = section["train"]
        assert (train["optimizer"], train["lr"], train["weight_decay"], train["batch_size"], train["epochs"]) == \
            ("adam", 1e-3, 0.0, 70, 150), role
        assert (train["schedule"], train["lr_decay"], train["schedule_per"]) == ("inverse_time", 1e-4, "step"), role
    assert config["tough"]["dropout"] == config["tolerant"]["dropout"] == 0.5
    assert config["student"]["dropout"] is None
    assert (config["student"]["model"], config["tough"]["model"]) == ("mobilenetv2_100", "efficientnet_b3")
