"""Smoke test of `make bench`: the benchmark runs end to end on tiny settings and writes a well-formed
results.json. It asserts structure and internal consistency only, never a speed (this machine is shared)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value > 0


def _goal_consistent(entry: dict, value: float) -> None:
    match = re.fullmatch(r"(>=|<=) ([0-9.]+)", entry["goal"])
    assert match, entry["goal"]
    target = float(match.group(2))
    assert isinstance(entry["met"], bool)
    assert entry["met"] == (value >= target if match.group(1) == ">=" else value <= target)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick", "--device", "cpu", "--out", str(out),
                           "--workdir", str(out.parent)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_results_json_structure(quick_run):
    results, _ = quick_run
    machine = results["machine"]
    assert machine["cpu_count"] >= 1 and machine["torch_threads"] >= 1
    assert machine["versions"]["torch"] and machine["versions"]["timm"]
    assert results["quick"] is True

    p1 = results["p1"]
    for key in ("ratio", "images_per_s_full", "images_per_s_tensors"):
        assert _number(p1[key]), (key, p1[key])
    assert p1["ratio"] == pytest.approx(p1["images_per_s_full"] / p1["images_per_s_tensors"], rel=1e-9)
    _goal_consistent(p1, p1["ratio"])
    config = p1["config"]
    expected = {"workers", "cache_decoded", "channels_last", "batch_size", "image_size", "teacher", "student"}
    assert expected <= set(config)
    assert config["variant"] in p1["variants"]
    for variant in p1["variants"].values():
        assert _number(variant["ratio"]) and len(variant["epochs_s"]) == config["timed_rounds"]

    p2 = results["p2"]
    for key in ("ratio", "ours_images_per_s", "reference_images_per_s"):
        assert _number(p2[key]), (key, p2[key])
    assert p2["ratio"] == pytest.approx(p2["ours_images_per_s"] / p2["reference_images_per_s"], rel=1e-9)
    _goal_consistent(p2, p2["ratio"])
    assert "erfan-nourbakhsh/KD-OCT" in p2["reference_source"]

    p3 = results["p3"]
    for name in ("oct", "face"):
        pair = p3[name]
        for key in ("teacher_ms", "student_ms", "ratio"):
            assert _number(pair[key]), (name, key, pair[key])
        assert pair["ratio"] == pytest.approx(pair["teacher_ms"] / pair["student_ms"], rel=1e-9)
        assert pair["runtime"] == "eager" and pair["runtimes"]["eager"]["teacher_ms"] == pair["teacher_ms"]
        _goal_consistent(pair, pair["ratio"])
    onnx = p3["onnx_vs_eager"]
    for key in ("eager_ms", "onnx_ms", "ratio"):
        assert _number(onnx[key]), (key, onnx[key])
    assert onnx["ratio"] == pytest.approx(onnx["onnx_ms"] / onnx["eager_ms"], rel=1e-9)
    _goal_consistent(onnx, onnx["ratio"])


def test_p4_and_p5_structure(quick_run):
    results, _ = quick_run
    for name, pair in results["p4"].items():
        if not isinstance(pair, dict):
            continue
        median = pair["epoch_median_s"]
        assert set(median) == {"no_kd", "kd_cached", "kd_online"} and all(_number(v) for v in median.values())
        assert pair["ratio"] == pytest.approx(median["kd_cached"] / median["no_kd"], rel=1e-9)
        assert pair["online_ratio"] == pytest.approx(median["kd_online"] / median["no_kd"], rel=1e-9)
        _goal_consistent(pair, pair["ratio"])
        assert _number(pair["cache_build_s"]) and pair["config"]["cache_epochs"] >= 2
        assert pair["cached_equals_online"] is True, name  # the views cache reproduces online KD bit for bit
    p5 = results["p5"]
    assert _number(p5["fp32_ms"]) and _number(p5["int8_ms"])
    assert p5["ratio"] == pytest.approx(p5["int8_ms"] / p5["fp32_ms"], rel=1e-9)
    assert p5["quantization"]["format"] == "QDQ" and 0 <= p5["top1_agreement_random_weights"] <= 1


def test_table_is_printed(quick_run):
    _, stdout = quick_run
    for label in ("P1 KD step", "P2 OCT data path", "P3 oct", "P3 face", "ONNX Runtime / eager", "P4 demo", "P5 OCT"):
        assert label in stdout


def test_decoded_cache_leaves_items_unchanged(tmp_path):
    """The knob P1 relies on: cached canvases give bit-identical training and evaluation items."""
    from kdcore.config import load_recipe
    from medkd.config import OCTRecipe
    from medkd.data import load_oct_dataset
    from medkd.dataset import BScanDataset
    from medkd.synth import write_synthetic_oct
    from medkd.transforms import build_augment

    write_synthetic_oct(tmp_path, 3, image_size=(96, 64), scans_per_eye=(1, 2))
    data = load_oct_dataset(tmp_path, "neh", subset="all")
    recipe = load_recipe(OCTRecipe, ROOT / "pipelines" / "kd_oct_neh.yaml")
    plain = BScanDataset(data.records, data.classes, 48, build_augment(recipe.teacher.augment))
    cached = BScanDataset(data.records, data.classes, 48, build_augment(recipe.teacher.augment), cache_decoded=True)
    for epoch in range(3):  # the first epoch fills the cache, later ones read it
        for i in range(len(plain)):
            key = (i, 1000 * epoch + i)
            assert torch.equal(plain[key]["image"], cached[key]["image"]), (epoch, i)
            assert torch.equal(plain[i]["image"], cached[i]["image"])
    assert not cached.canvas(0).flags.writeable  # an in-place augmentation would fail, not corrupt the cache


def test_reference_chain_output(tmp_path):
    """KD-OCT's chain turns a greyscale JPEG into a normalised 3-channel tensor of the crop size."""
    import cv2

    sys.path.insert(0, str(BENCH))
    from reference_kdoct import kdoct_load, kdoct_train_transform

    path = tmp_path / "scan.jpg"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (62, 96), dtype=np.uint8))
    out = kdoct_load(path, kdoct_train_transform(64))
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
