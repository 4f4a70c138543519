"""facekd export --format onnx-int8: static int8 calibrated on the fold's training faces, gated on the NME of its
test subjects against the float32 model (at most 0.1 NME points worse), and used by predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facekd.export import export_run
from facekd.predictor import LandmarkDetector
from kdcore.checkpoint import load_weights, read_meta, save_weights
from kdcore.errors import KDError
from kdcore.export import INT8_FILE
from tests.facekd.conftest import make_face_run

pytestmark = pytest.mark.usefixtures("one_thread")


def _mean_shape_head(run) -> None:
    """Start each fold's head at the mean shape of its training faces (as ``mean_shape_init`` does): int8 is judged
    on NME, which for an untrained head's noise would mean nothing."""
    from facekd.export import _face_crops, face_contract
    from kdcore.export import find_run_models

    for fold, entry in find_run_models(run).items():
        crops = [t for _, _, t in _face_crops(entry, face_contract(entry), 12, "train")[0] if t is not None]
        mean = np.mean(crops, axis=0).reshape(-1)
        state, meta = load_weights(entry.weights), read_meta(entry.weights)
        head = [k for k in state if k.endswith("classifier.bias")][0]
        state[head] = torch.as_tensor(mean, dtype=state[head].dtype)
        state[head.replace("bias", "weight")] *= 0.01
        save_weights(entry.weights, state, meta)


@pytest.fixture(scope="module")
def int8_face_export(tmp_path_factory):
    base = tmp_path_factory.mktemp("face-int8")
    run = make_face_run(base)
    _mean_shape_head(run)
    try:
        summary = export_run(run, folds=[0], formats="onnx-int8", out_dir=base / "export", n_inputs=4)
    except KDError as exc:  # the gate refused it: the numbers are in parity.json either way
        summary = {"refused": str(exc)}
    return base / "export", summary


def test_int8_face_export_is_gated_on_nme_and_recorded(int8_face_export):
    out, summary = int8_face_export
    parity = json.loads((out / "parity.json").read_text())
    check = next(c for c in parity["checks"] if c["artefact"] == INT8_FILE)
    assert check["nme_fp32"] is not None and check["nme_int8"] is not None
    assert check["passed"] == (check["nme_increase"] <= 0.1)
    assert check["nme_fp32"] < 50  # the mean training shape: an NME that means something (points, %)
    assert "annotated face crops of the fold's test subjects" in check["note"]
    if check["passed"]:
        fold = summary["folds"][0]
        assert fold["onnx_int8"]["calibration_images"] > 0 and (out / INT8_FILE).is_file()
        assert json.loads((out / "model.json").read_text())["files"]["onnx_int8"] == INT8_FILE
        assert LandmarkDetector.load(out).backend == "onnx-int8"
    else:
        assert "refused" in summary and not (out / INT8_FILE).exists()


def test_int8_needs_the_runs_own_faces(tmp_path):
    run = make_face_run(tmp_path, data_root=tmp_path / "gone", report=False)
    with pytest.raises(KDError, match="onnx-int8 needs the run's own data"):
        export_run(run, folds=[0], formats="onnx-int8", out_dir=tmp_path / "x", n_inputs=2)
    assert not (tmp_path / "x").exists() or not (tmp_path / "x" / INT8_FILE).exists()


def test_int8_gate_of_a_landmark_model_is_nme_points():
    from facekd.export import FACE_EXPORTER
    from kdcore.export.run_export import int8_bound

    assert int8_bound(FACE_EXPORTER, None) == {}
    assert int8_bound(FACE_EXPORTER, 0.25) == {"max_nme_increase": 0.25}
    with pytest.raises(KDError, match="--int8-gate -0.1: a landmark model's gate is the most NME points"):
        int8_bound(FACE_EXPORTER, -0.1)
