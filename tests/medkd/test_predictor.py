"""OCTClassifier: an exported student agrees with its PyTorch original on real B-scans, on every backend."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kdcore.checkpoint import load_weights
from kdcore.errors import DataError, KDError
from kdcore.images import read_image
from kdcore.models import create_model
from medkd.export import export_run
from medkd.predictor import OCTClassifier, predict_files
from medkd.preprocess import preprocess
from tests.medkd.conftest import CLASSES, make_oct_run

SIZE = 48


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    base = tmp_path_factory.mktemp("oct-predictor")
    run = make_oct_run(base, size=SIZE, report=False)
    export_run(run, folds=0, formats="onnx,torchscript", out_dir=base / "export", n_inputs=4)
    model = create_model("test_efficientnet", len(CLASSES), in_chans=1)
    model.load_state_dict(load_weights(run / "folds" / "fold_0" / "student" / "model.safetensors"))
    return base / "export", model.eval()


@pytest.fixture(scope="module")
def real_scans(shared_fixtures):
    scans = sorted((shared_fixtures / "oct2017-real").glob("*/*.jpeg"))
    if not scans:
        pytest.skip("no real OCT B-scans in ../shared/fixtures/oct2017-real")
    return scans[::4]  # 8 scans, two per class, both image sizes


def torch_probabilities(model, scans, flip=False) -> np.ndarray:
    """The reference: the training contract (read_image + preprocess) and the eager PyTorch model."""
    x = torch.from_numpy(np.stack([preprocess(read_image(s, "gray"), SIZE) for s in scans]))
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)
        if flip:
            probs = (probs + torch.softmax(model(torch.flip(x, dims=[-1])), dim=1)) / 2
    return probs.numpy()


@pytest.mark.real_fixtures
@pytest.mark.parametrize("backend", ["onnx", "torchscript", "torch"])
def test_backends_agree_with_pytorch_on_real_scans(export, real_scans, backend):
    folder, model = export
    classifier = OCTClassifier.load(folder, backend=backend)
    assert classifier.classes == list(CLASSES) and classifier.input_size == SIZE
    got = np.array([[p[c] for c in CLASSES] for p in classifier.predict_batch(real_scans, batch_size=3)])
    expected = torch_probabilities(model, real_scans)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(1) == expected.argmax(1)).all()


@pytest.mark.real_fixtures
def test_tta_is_the_mean_with_the_mirrored_input(export, real_scans):
    folder, model = export
    classifier = OCTClassifier.load(folder / "model.onnx")
    got = classifier.predict(real_scans[0], tta=True)
    expected = torch_probabilities(model, real_scans[:1], flip=True)[0]
    np.testing.assert_allclose([got[c] for c in CLASSES], expected, atol=1e-5)
    assert sum(got.values()) == pytest.approx(1.0)


@pytest.mark.real_fixtures
def test_arrays_and_files_give_the_same_answer(export, real_scans):
    classifier = OCTClassifier.load(export[0])
    gray = read_image(real_scans[1], "gray")
    from_file = classifier.predict(real_scans[1])
    for array in (gray, gray[:, :, None], np.repeat(gray[:, :, None], 3, axis=2)):
        assert classifier.predict(array) == pytest.approx(from_file, abs=1e-6)


@pytest.mark.real_fixtures
def test_predict_files_writes_a_csv(export, real_scans, tmp_path):
    classifier = OCTClassifier.load(export[0])
    out = tmp_path / "pred" / "predictions.csv"
    predict_files(classifier, real_scans[:3], out)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "class"] + [f"prob_{c}" for c in CLASSES]
    assert [r["path"] for r in rows] == [str(p) for p in real_scans[:3]]
    for row, scan in zip(rows, real_scans[:3]):
        probs = classifier.predict(scan)
        assert row["class"] == max(probs, key=probs.get)
        assert float(row[f"prob_{row['class']}"]) == pytest.approx(probs[row["class"]], abs=1e-6)
    assert sorted(p.name for p in out.parent.iterdir()) == ["predictions.csv"]  # no temporary file left


def test_unreadable_image_is_named_and_no_csv_is_left(export, tmp_path):
    bad = tmp_path / "truncated.jpeg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    with pytest.raises(DataError, match="truncated.jpeg"):
        predict_files(export[0], [bad], tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_output_path_that_is_a_folder_is_refused_before_predicting(export, tmp_path):
    (tmp_path / "out.csv").mkdir()
    with pytest.raises(KDError, match="out.csv: is a folder"):
        predict_files(export[0], [tmp_path / "never_read.png"], tmp_path / "out.csv")


def test_incomplete_sidecar_names_the_missing_keys(export, tmp_path):
    import json

    folder = Path(shutil.copytree(export[0], tmp_path / "copy"))
    contract = json.loads((folder / "model.json").read_text())
    del contract["input"]["mean"], contract["format"]
    (folder / "model.json").write_text(json.dumps(contract))
    with pytest.raises(KDError, match="model.json: not an export sidecar"):
        OCTClassifier.load(folder)
    contract["format"] = "kdvision-export"
    (folder / "model.json").write_text(json.dumps(contract))
    with pytest.raises(KDError, match=r"model.json: missing key\(s\) input.mean"):
        OCTClassifier.load(folder)


def test_wrong_arrays_are_refused_with_their_shape(export):
    classifier = OCTClassifier.load(export[0])
    with pytest.raises(DataError, match=r"\(40, 50, 4\)"):
        classifier.predict(np.zeros((40, 50, 4), np.uint8))
    with pytest.raises(DataError, match="float32"):
        classifier.predict(np.zeros((40, 50), np.float32))


def test_missing_export_files_are_named(export, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(export[0], folder)
    (folder / "model.onnx").unlink()
    with pytest.raises(KDError, match="model.onnx"):
        OCTClassifier.load(folder)
    OCTClassifier.load(folder, backend="torchscript")  # the other files still serve
    (folder / "model.json").unlink()
    with pytest.raises(KDError, match="model.json"):
        OCTClassifier.load(folder, backend="torchscript")
    with pytest.raises(KDError, match="not found"):
        OCTClassifier.load(tmp_path / "nowhere")
