"""facekd export: a tiny landmark run exported to ONNX and TorchScript, verified on real face crops."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from facekd.export import export_run
from facekd.pts_files import write_pts
from kdcore.checkpoint import save_weights
from kdcore.cv import make_fold_manifest
from kdcore.errors import KDError
from kdcore.models import create_model

LFPW = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "faces-lfpw"
N_POINTS = 68


def _synthetic_faces(root: Path, n: int = 6) -> list[str]:
    """Noise images with a plausible 68-point layout, for machines without the real fixtures."""
    rng = np.random.default_rng(1)
    names = []
    for i in range(n):
        root.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / f"face_{i}.png"), rng.integers(0, 256, size=(120, 100, 3), dtype=np.uint8))
        write_pts(root / f"face_{i}.pts", rng.uniform(20, 90, size=(N_POINTS, 2)))
        names.append(f"face_{i}.png")
    return names


def make_face_run(base: Path, size: int = 32, data_root: Path | None = None, report: bool = True) -> Path:
    """A run folder as ``facekd run`` writes it, with two folds of an untrained tiny student."""
    run = base / "run"
    if data_root is None:
        if LFPW.is_dir():
            root, names = LFPW, sorted(p.name for p in LFPW.glob("*.png"))[:12]
        else:
            root, names = base / "data", _synthetic_faces(base / "data", n=12)  # as many as the real ones
    else:
        root, names = data_root, [f"face_{i}.png" for i in range(6)]
    items = [{"id": Path(n).stem, "path": n, "subject": Path(n).stem, "subset": "test", "image_index": None}
             for n in names]
    run.mkdir(parents=True)
    config = {"name": "tiny-face", "data": {"root": str(root), "format": "folder"}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "environment.json").write_text(json.dumps({"git": {"commit": "fedcba9876543210", "dirty": True}, "seed": 2}))
    (run / "dataset.json").write_text(json.dumps({"n_points": N_POINTS, "items": items}))
    manifest = make_fold_manifest([i["subject"] for i in items], None, 2, 0.5, seed=0, group_name="subject")
    manifest.save(run / "folds.json")
    torch.manual_seed(0)
    for fold, nme in enumerate((0.08, 0.11)):
        model = create_model("test_efficientnet", 2 * N_POINTS, in_chans=3)
        meta = {"arch": "test_efficientnet", "role": "student", "fold": fold, "manifest": manifest.sha,
                "task": "landmarks", "num_outputs": 2 * N_POINTS, "in_chans": 3, "n_points": N_POINTS,
                "scheme": "ibug68", "recipe": "tiny-face",
                "input": {"size": size, "channels": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                          "crop_margin": 0.25, "colour": "rgb"},
                "kept": "swa", "best_epoch": 1, "best_score": nme, "epochs_run": 2, "monitor": "nme"}
        folder = run / "folds" / f"fold_{fold}" / "student"
        folder.mkdir(parents=True)
        save_weights(folder / "model.safetensors", model.state_dict(), meta)
        (folder / "done.json").write_text(json.dumps({"model": "student", "fold": fold, "manifest": manifest.sha}))
    if report:
        summary = {"nme": {"mean": 0.0612, "std": 0.004, "ci95": [0.055, 0.068]},
                   "fr": {"mean": 0.031, "std": 0.01, "ci95": [0.01, 0.05]},
                   "auc": {"mean": 0.52, "std": 0.02, "ci95": [0.48, 0.56]}}
        (run / "report.json").write_text(json.dumps({"models": {"student": {"summary": summary}}}))
    return run


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
    with pytest.raises(KDError, match="MONAI bundles are for the OCT"):
        export_run(run, formats="onnx,bundle", out_dir=tmp_path / "x")
    summary = export_run(run, folds=[1], formats=["torchscript"], out_dir=tmp_path / "x", n_inputs=2)
    check = summary["folds"][0]["parity"][0]
    assert check["artefact"] == "model.ts" and check["inputs"] == "synthetic" and check["passed"]
    assert "No performance claim" in (tmp_path / "x" / "MODEL_CARD.md").read_text()
