"""medkd export --format onnx-int8: static QDQ int8 calibrated on the run's training B-scans, gated, used by predict."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kdcore.errors import KDError
from kdcore.export import export_int8, load_runner
from medkd.cli import main
from medkd.export import export_run
from medkd.predictor import OCTClassifier
from tests.medkd.conftest import make_oct_run


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory):
    base = tmp_path_factory.mktemp("int8")
    run = make_oct_run(base, train_steps=100)  # an untrained model's near-ties flip under any quantisation
    summary = export_run(run, formats={"onnx-int8"}, out_dir=base / "export")
    return base, run, base / "export", summary["folds"][0]


def test_int8_export_passes_its_gate_and_is_recorded(int8_export):
    _, _, out, fold = int8_export
    check = fold["onnx_int8"]["check"]
    assert check["passed"] and check["argmax_agreement"] >= 0.99 and check["inputs"] == "real"
    assert "test patients" in check["note"]
    assert fold["onnx_int8"]["calibration_images"] > 0 and fold["onnx_int8"]["format"] == "QDQ"
    contract = json.loads((out / "model.json").read_text())
    assert contract["files"]["onnx_int8"] == "model.int8.onnx"
    assert contract["export"]["onnx_int8"]["gate"]["passed"]
    parity = json.loads((out / "parity.json").read_text())
    assert {c["artefact"] for c in parity["checks"]} == {"model.onnx", "model.int8.onnx"} and parity["passed"]
    assert "onnxruntime_int8" in (out / "MODEL_CARD.md").read_text()


def test_predict_uses_the_int8_model_by_default(int8_export, tmp_path, capsys):
    base, _, out, _ = int8_export
    assert OCTClassifier.load(out).backend == "onnx-int8"
    assert OCTClassifier.load(out, backend="onnx").backend == "onnx"
    _, _, backend, model_file = load_runner(out / "model.int8.onnx")  # the file alone finds model.json beside it
    assert backend == "onnx-int8" and model_file.name == "model.int8.onnx"
    images = sorted((base / "data").rglob("*.png"))[:6]
    assert main(["predict", str(out), *map(str, images), "--out", str(tmp_path / "p.csv")]) == 0
    assert "6 image(s), backend onnx-int8" in capsys.readouterr().out  # the user is told which model ran
    int8 = OCTClassifier.load(out).predict_proba([str(p) for p in images])
    fp32 = OCTClassifier.load(out, backend="onnx").predict_proba([str(p) for p in images])
    rows = (tmp_path / "p.csv").read_text().splitlines()[1:]
    assert [r.split(",")[1] for r in rows] == [OCTClassifier.load(out).classes[i] for i in int8.argmax(1)]
    assert not np.array_equal(int8, fp32) and np.abs(int8 - fp32).max() < 0.05  # a different, close model


def test_int8_model_below_the_gate_is_refused_and_not_kept(int8_export, tmp_path):
    _, _, out, _ = int8_export
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("model.onnx", "model.json"):
        (folder / name).write_bytes((out / name).read_bytes())
    rng = np.random.default_rng(0)
    inputs = rng.normal(0, 1, (6, 1, 32, 32)).astype(np.float32)
    with pytest.raises(KDError, match="int8 parity gate failed.*not kept"):
        export_int8(folder, inputs, inputs, classification=True, min_agreement=1.01)
    assert not (folder / "model.int8.onnx").exists()
    assert json.loads((folder / "parity.json").read_text())["passed"] is False


def test_int8_export_without_the_runs_images_is_refused(tmp_path):
    run = make_oct_run(tmp_path)
    for image in (tmp_path / "data").rglob("*.png"):
        image.unlink()
    with pytest.raises(KDError, match="onnx-int8 needs the run's own data"):
        export_run(run, formats={"onnx-int8"}, out_dir=tmp_path / "export")


def test_int8_gate_bound_is_the_users_and_recorded(int8_export, tmp_path):
    _, run, _, _ = int8_export
    summary = export_run(run, formats={"onnx-int8"}, out_dir=tmp_path / "loose", int8_gate=0.5)
    check = summary["folds"][0]["onnx_int8"]["check"]
    assert check["min_agreement"] == 0.5 and check["rule"].endswith(">= 0.5") and check["passed"]
    gate = json.loads((tmp_path / "loose" / "model.json").read_text())["export"]["onnx_int8"]["gate"]
    assert gate["min_agreement"] == 0.5


@pytest.mark.parametrize("bound", ["0", "1.5", "-1"])
def test_int8_gate_outside_a_share_is_refused_before_anything_is_written(int8_export, tmp_path, capsys, bound):
    _, run, _, _ = int8_export
    out = tmp_path / "x"
    assert main(["export", str(run), "--format", "onnx,onnx-int8", "--int8-gate", bound, "--out", str(out)]) != 0
    assert f"--int8-gate {float(bound)}: a classifier's gate is the least top-1 agreement" in capsys.readouterr().err
    assert not out.exists()
