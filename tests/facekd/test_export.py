"""facekd export: a tiny landmark run exported to ONNX and TorchScript, verified on real face crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from facekd.export import export_run
from kdcore.errors import KDError
from kdcore.models import create_model
from tests.facekd.conftest import N_POINTS, make_face_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("face")
    run = make_face_run(base)
    summary = export_run(run, formats="onnx,torchscript", out_dir=base / "export", n_inputs=6)
    return run, base / "export", summary


def test_best_fold_has_the_lowest_nme_and_parity_holds(exported):
    _, out, summary = exported
    assert [f["fold"] for f in summary["folds"]] == [0]  # NME: lower is better
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and [c["artefact"] for c in parity["checks"]] == ["model.onnx", "model.ts"]
    for check in parity["checks"]:
        assert check["inputs"] == "real" and check["n_inputs"] == 6 and check["argmax_agreement"] is None
        assert 0 <= check["mean_abs_diff"] <= check["max_abs_diff"] <= check["tolerance"] <= 2e-4
    assert not (out / "bundle").exists()


def test_onnx_matches_pytorch_on_a_landmark_crop(exported):
    import onnxruntime as ort

    from facekd.geometry import box_from_landmarks, crop_face
    from facekd.pts_files import read_pts
    from facekd.preprocess import normalize_rgb
    from kdcore.checkpoint import load_weights
    from kdcore.images import read_image

    run, out, _ = exported
    config = yaml.safe_load((run / "config.yaml").read_text())
    item = json.loads((run / "dataset.json").read_text())["items"][0]
    image_path = Path(config["data"]["root"]) / item["path"]
    box = box_from_landmarks(read_pts(image_path.with_suffix(".pts")))
    crop, _ = crop_face(read_image(image_path, "rgb"), box, 32, 0.25)
    x = normalize_rgb(crop)[None]
    model = create_model("test_efficientnet", 2 * N_POINTS, in_chans=3)
    model.load_state_dict(load_weights(run / "folds" / "fold_0" / "student" / "model.safetensors"))
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, atol=1e-4)


def test_sidecar_carries_the_crop_contract_and_scheme(exported):
    _, out, _ = exported
    contract = json.loads((out / "model.json").read_text())
    assert contract["task"] == "landmarks" and contract["n_points"] == 68 and contract["scheme"] == "ibug68"
    assert contract["input"]["crop_margin"] == 0.25 and contract["input"]["size"] == 32
    flip = contract["flip_permutation"]
    assert sorted(flip) == list(range(68))
    assert flip[36] == 45 and flip[30] == 30  # the outer eye corners swap, the nose tip stays
    assert contract["output"]["shape"] == ["batch", 136]
    assert set(contract["detector"]["to_landmark_box"]) == {"dx", "dy", "width", "height"}
    assert contract["source"]["git_dirty"] is True


def test_model_card_has_face_metrics_and_limits(exported):
    _, out, _ = exported
    card = (out / "MODEL_CARD.md").read_text()
    assert "| nme | 0.0612 | 0.004 | [0.055, 0.068] |" in card and "| fr | 0.031" in card
    assert "subjects" in card and "Not for identifying people" in card
    assert "(uncommitted changes)" in card


def test_bundle_is_refused_and_other_errors(tmp_path):
    run = make_face_run(tmp_path, data_root=tmp_path / "gone", report=False)
    with pytest.raises(KDError, match=r"--format bundle,onnx: choose from onnx, torchscript, onnx-int8"):
        export_run(run, formats="onnx,bundle", out_dir=tmp_path / "x")
    summary = export_run(run, folds=[1], formats=["torchscript"], out_dir=tmp_path / "x", n_inputs=2)
    check = summary["folds"][0]["parity"][0]
    assert check["artefact"] == "model.ts" and check["inputs"] == "synthetic" and check["passed"]
    assert "No performance claim" in (tmp_path / "x" / "MODEL_CARD.md").read_text()
