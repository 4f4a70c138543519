"""The KD-OCT recipes against the values of the authors' code (erfan-nourbakhsh/KD-OCT, Teacher-Training/NEH/config
and Student-Training/NEH/config, read by hand), through `medkd config` as a user would see them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import medkd.cli

REPO = Path(__file__).resolve().parents[2]


def resolved(capsys, recipe: str, *sets: str) -> dict:
    argv = ["config", str(REPO / "pipelines" / recipe)]
    for item in sets:
        argv += ["--set", item]
    assert medkd.cli.main(argv) == 0
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("recipe", ["kd_oct_neh.yaml", "kd_oct_oct2017.yaml"])
def test_kd_oct_recipes_equal_the_authors_code(capsys, recipe):
    config = resolved(capsys, recipe)
    teacher, student = config["teacher"], config["student"]
    t, s = teacher["train"], student["train"]
    assert config["cv"]["val_fraction"] == 0.2 and config["cv"]["folds"] == 5
    assert (teacher["dropout"], teacher["drop_path"], student["dropout"]) == (0.3, 0.3, 0.3)
    assert (t["epochs"], t["warmup_epochs"], t["lr"], t["backbone_lr"], t["min_lr"], t["weight_decay"]) == \
        (150, 10, 1e-4, 2e-5, 1e-7, 0.05)
    assert (t["freeze_backbone_epochs"], t["patience"], t["clip_grad_norm"]) == (5, 25, None)
    assert (t["schedule"], t["schedule_per"], t["schedule_epochs"], t["warmup_start_factor"]) == \
        ("cosine", "epoch", 150, None)
    assert t["filter_bias_and_bn"] is False and s["filter_bias_and_bn"] is False
    assert t["swa"] == {"enabled": True, "start_epoch": 100, "lr": 1e-5, "anneal_epochs": 10,
                        "anneal_strategy": "cos", "on_plateau": "stop"}
    assert (teacher["loss"], teacher["focal_gamma"], teacher["class_weights"], teacher["focal_normalize"]) == \
        ("focal", 2.0, "balanced", "batch")
    assert teacher["tta"] is True and student["tta"] is False and student["monitor"] == "accuracy"
    assert (student["kd_loss"], student["temperature"], student["ce_weight"], student["kd_weight"]) == \
        ("kd", 4.0, 0.3, 0.7)
    assert (s["epochs"], s["warmup_epochs"], s["lr"], s["min_lr"], s["weight_decay"], s["patience"]) == \
        (100, 5, 1e-3, 1e-6, 0.01, 20)
    assert (s["schedule_per"], s["warmup_start_factor"], s["clip_grad_norm"]) == ("epoch", None, None)
    ta, sa = teacher["augment"], student["augment"]
    assert ta["randaugment"]["magnitude"] == 9 and sa["randaugment"]["magnitude"] == 7
    assert (ta["rotate"], ta["shear"], ta["scale"], ta["erasing"], ta["erasing_scale"]) == \
        (20, 15, [0.85, 1.15], 0.25, [0.02, 0.15])
    assert (ta["blur"], ta["blur_kernel"], ta["posterize"], ta["posterize_bits"]) == (0.2, [3, 3], 0.2, [4, 4])
    assert (sa["rotate"], sa["erasing"], sa["erasing_scale"], sa["shear"]) == (15, 0.2, [0.02, 0.1], 0)


def test_config_resolves_the_alpha_shorthand_and_fails_as_run_does(capsys):
    config = resolved(capsys, "kd_oct_demo.yaml", "student.alpha=0.4")
    assert (config["student"]["alpha"], config["student"]["ce_weight"], config["student"]["kd_weight"]) == \
        (None, 0.4, 0.6)
    assert medkd.cli.main(["config", str(REPO / "pipelines" / "kd_oct_demo.yaml"), "--set", "cv.val_fraction=0.7"]) == 2
    assert "cv.val_fraction: must be < 0.5, got 0.7" in capsys.readouterr().err
