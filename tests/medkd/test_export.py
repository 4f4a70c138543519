"""medkd export: a tiny run exported to ONNX, TorchScript and a MONAI bundle that MONAI's own tools accept."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from kdcore.errors import KDError
from kdcore.models import create_model
from medkd.export import export_run
from tests.medkd.conftest import CLASSES, make_oct_run

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
pytestmark = pytest.mark.usefixtures("one_thread")


SCHEMA = SHARED / "monai" / "meta_schema_20240725.json"

# MONAI's command line (``python -m monai.bundle CHECK ARGS`` for each check, one after the other) in one fresh
# process, started before the export: it spends most of its time importing torch and MONAI, which overlaps
# with the export here; then it waits for the bundle. One process, not one per check: on two shared cores
# a second import of torch and MONAI costs more CPU time than running the checks side by side saves.
MONAI_CLI = """
import json, runpy, sys, time, traceback
from pathlib import Path
import monai.bundle  # noqa: F401
ready, deadline = Path(sys.argv[1]), time.monotonic() + 600
while not ready.exists():
    if time.monotonic() > deadline:
        sys.exit(f"{ready} never appeared")
    time.sleep(0.05)
for name, args in json.loads(sys.argv[2]).items():
    print(f"=== {name}", flush=True)
    sys.argv = ["monai.bundle", *args]
    try:
        runpy.run_module("monai.bundle", run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = 0 if exc.code in (None, 0) else 1
    except Exception:
        traceback.print_exc()
        code = 1
    print(f"=== {name} exit {code}", flush=True)
"""


@pytest.fixture(scope="module")
def monai_cli(tmp_path_factory):
    """MONAI's own bundle checks on the bundle that ``exported`` writes, run once per session.

    Yields ``(export folder, ready flag, process, log file, checks)``: ``exported`` writes the bundle into the
    export folder, then touches the flag.
    """
    base = tmp_path_factory.mktemp("monai-cli")
    bundle, ready, log = base / "export" / "bundle", base / "bundle-written", base / "monai.log"
    meta, config = bundle / "configs" / "metadata.json", bundle / "configs" / "inference.json"
    checks = {"verify_net_in_out": ["verify_net_in_out", "network_def", "--meta_file", str(meta),
                                    "--config_file", str(config), "--device", "cpu"]}
    if SCHEMA.is_file():
        copy = base / "schema" / SCHEMA.name  # verify_metadata may write beside the schema file
        copy.parent.mkdir()
        shutil.copyfile(SCHEMA, copy)
        checks["verify_metadata"] = ["verify_metadata", "--meta_file", str(meta), "--filepath", str(copy)]
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", MONAI_CLI, str(ready), json.dumps(checks)], stdout=out,
                                stderr=subprocess.STDOUT)
    yield bundle.parent, ready, proc, log, checks
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def exported(monai_cli):
    out, ready = monai_cli[:2]
    run = make_oct_run(out.parent)
    summary = export_run(run, formats="onnx,torchscript,bundle", out_dir=out,
                         schema=SCHEMA if SCHEMA.is_file() else None)
    ready.touch()
    return run, out, summary


def test_default_fold_is_the_best_validation_score(exported):
    _, out, summary = exported
    assert summary["selected_by"] == "best validation score"
    assert [f["fold"] for f in summary["folds"]] == [1]  # loss 0.3 < 0.5
    assert json.loads((out / "model.json").read_text())["source"]["fold"] == 1


def test_every_format_written_with_stored_parity(exported):
    _, out, summary = exported
    for name in ("model.onnx", "model.ts", "model.safetensors", "model.json", "parity.json", "MODEL_CARD.md",
                 "bundle/configs/metadata.json", "bundle/configs/inference.json", "bundle/models/model.pt",
                 "bundle/models/model.ts", "bundle/models/model.onnx", "bundle/docs/README.md", "bundle/LICENSE"):
        assert (out / name).is_file(), name
    parity = json.loads((out / "parity.json").read_text())
    checks = {c["artefact"]: c for c in parity["checks"]}
    assert parity["passed"] and {"model.onnx", "model.ts", "bundle/models/model.ts"} <= set(checks)
    for name in ("model.onnx", "model.ts", "bundle/models/model.ts"):
        check = checks[name]
        assert check["inputs"] == "real" and check["n_inputs"] == 8
        assert 0 <= check["mean_abs_diff"] <= check["max_abs_diff"] <= check["tolerance"] <= 2e-4
        assert check["argmax_agreement"] == 1.0
    # the bundle's MONAI preprocessing reproduces medkd.preprocess on the same files
    assert checks["bundle preprocessing (inputs)"]["max_abs_diff"] < 1e-4
    assert summary["folds"][0]["parity"] == parity["checks"]


def test_onnx_output_matches_an_independent_pytorch_forward(exported):
    import onnxruntime as ort

    from kdcore.checkpoint import load_weights
    from kdcore.images import read_image
    from medkd.preprocess import preprocess

    run, out, _ = exported
    model = create_model("test_efficientnet", 4, in_chans=1)
    model.load_state_dict(load_weights(run / "folds" / "fold_1" / "student" / "model.safetensors"))
    scan = read_image(run.parent / "data" / "DME" / "DME-2-1.png", "gray")
    x = np.stack([preprocess(scan, 32), preprocess(scan[:, ::-1].copy(), 32)])
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] != 2  # the batch dimension is dynamic, not the export's 2
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, atol=1e-4)


def test_sidecar_is_self_contained_and_has_no_absolute_paths(exported):
    run, out, _ = exported
    contract = json.loads((out / "model.json").read_text())
    assert contract["classes"] == list(CLASSES) and contract["task"] == "classification"
    assert contract["input"]["size"] == 32 and contract["input"]["resize"] == "letterbox"
    assert contract["output"]["meaning"] == "logits" and contract["export"]["onnx"]["opset"] >= 17
    assert contract["source"]["git_commit"] == "0123456789abcdef0123" and contract["source"]["recipe"] == "tiny-oct"
    assert contract["latency"]["onnxruntime"]["median_ms"] > 0 and contract["latency"]["machine"]["cpu_count"] >= 1
    needles = [str(run.resolve()), str(run.parent.resolve()), str(Path.home()), sys.prefix]
    for file in out.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            assert not any(n.encode() + b"/" in data for n in needles), file


def test_model_card_reports_data_metrics_parity_latency(exported):
    _, out, _ = exported
    card = (out / "MODEL_CARD.md").read_text()
    assert "24 items from 12 patients" in card
    assert "| accuracy | 0.875 | 0.02 | [0.81, 0.93] |" in card and "| ece | 0.061" in card
    assert "not a medical device" in card.lower() and "| model.onnx | 8 | real |" in card
    assert "2 cores" in card and "median ms" in card


def test_bundle_inference_config_runs_and_matches_the_predictor(exported, tmp_path):
    from monai.bundle import run as run_bundle

    from medkd.predictor import OCTClassifier

    run, out, _ = exported
    images = sorted((run.parent / "data").rglob("*.png"))[:3]
    for image in images:
        shutil.copyfile(image, tmp_path / image.name)
    target = tmp_path / "bundle_predictions.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's reminder that configs run code: this one is ours
        run_bundle(config_file=str(out / "bundle" / "configs" / "inference.json"), bundle_root=str(out / "bundle"),
                   input_dir=str(tmp_path), output_file=str(target))
    rows = [line.split(",") for line in target.read_text().splitlines()]
    assert rows[0] == ["image", "class"] + [f"prob_{c}" for c in CLASSES] and len(rows) == 4
    classifier = OCTClassifier.load(out)
    for row in rows[1:]:
        expected = classifier.predict(tmp_path / row[0])
        np.testing.assert_allclose([float(v) for v in row[2:]], [expected[c] for c in CLASSES], atol=1e-5)


def test_all_folds_into_subfolders_and_unreachable_data_is_synthetic(tmp_path):
    run = make_oct_run(tmp_path, data_root=tmp_path / "moved-away", report=False)
    summary = export_run(run, folds="all", formats={"torchscript"}, out_dir=tmp_path / "out", n_inputs=3)
    assert [f["fold"] for f in summary["folds"]] == [0, 1]
    for fold in (0, 1):
        parity = json.loads((tmp_path / "out" / f"fold_{fold}" / "parity.json").read_text())
        assert [c["artefact"] for c in parity["checks"]] == ["model.ts"]
        assert parity["checks"][0]["inputs"] == "synthetic" and "data.root" in parity["checks"][0]["note"]
        assert not (tmp_path / "out" / f"fold_{fold}" / "model.onnx").exists()
    card = (tmp_path / "out" / "fold_0" / "MODEL_CARD.md").read_text()
    assert "`report.json` is missing" in card


def test_clear_errors(tmp_path):
    run = make_oct_run(tmp_path, report=False)
    with pytest.raises(KDError, match="fold\\(s\\) \\[5\\]"):
        export_run(run, folds=5, formats="onnx", out_dir=tmp_path / "x")
    with pytest.raises(KDError, match="no trained 'teacher'"):
        export_run(run, model="teacher", out_dir=tmp_path / "x")
    with pytest.raises(KDError, match="choose from"):
        export_run(run, formats="tflite", out_dir=tmp_path / "x")
    with pytest.raises(KDError, match="not a run folder"):
        export_run(tmp_path / "data", out_dir=tmp_path / "x")

    with pytest.raises(KDError, match="--schema .*nope.json: file not found"):
        export_run(run, formats="bundle", out_dir=tmp_path / "x", schema=tmp_path / "nope.json")
    assert not (tmp_path / "x").exists()


def test_failed_export_leaves_no_folder(tmp_path, monkeypatch, capsys):
    import medkd.bundle
    import medkd.cli

    def failing_check(*args, **kwargs):
        raise KDError("bundle check failed")

    run = make_oct_run(tmp_path, report=False)
    monkeypatch.setattr(medkd.bundle, "verify_bundle", failing_check)
    code = medkd.cli.main(["export", str(run), "--format", "bundle", "--out", str(tmp_path / "app")])
    assert code == 2 and "bundle check failed" in capsys.readouterr().err
    assert not (tmp_path / "app").exists(), "the ONNX/TorchScript files written before the failure are removed"


def _monai_check(monai_cli, name: str) -> str:
    """The output of one check, which must have exited 0."""
    _, _, proc, log, _ = monai_cli
    proc.wait(timeout=300)
    text = log.read_text()
    output, end, status = text.partition(f"=== {name}\n")[2].partition(f"=== {name} exit ")
    assert end, f"python -m monai.bundle {name} did not finish (exit {proc.returncode}):\n{text[-2000:]}"
    assert status.startswith("0\n"), f"python -m monai.bundle {name} failed:\n{output[-2000:]}"
    return output


# last: the MONAI process started before the export has had the other tests' time to finish
def test_monai_command_line_verifies_the_network(exported, monai_cli):
    assert "data shape of network is verified with no error" in _monai_check(monai_cli, "verify_net_in_out")


def test_monai_command_line_verifies_the_metadata(exported, monai_cli):
    if "verify_metadata" not in monai_cli[4]:
        pytest.skip("../shared/monai/meta_schema_20240725.json is absent (MONAI cannot download it offline)")
    assert "metadata is verified with no error" in _monai_check(monai_cli, "verify_metadata")


def test_running_the_bundle_leaves_gradients_on():
    import torch

    assert torch.is_grad_enabled(), "an earlier in-process bundle run switched autograd off for the whole process"


def test_edited_or_interrupted_exports_and_unfinished_folds_are_refused(exported, tmp_path):
    from medkd.predictor import OCTClassifier

    run, out, _ = exported
    copy = Path(shutil.copytree(out, tmp_path / "copy", ignore=shutil.ignore_patterns("bundle")))
    OCTClassifier.load(copy)  # whole: accepted
    contract = json.loads((copy / "model.json").read_text())
    contract["classes"] = contract["classes"][::-1]  # would relabel every probability column
    (copy / "model.json").write_text(json.dumps(contract))
    with pytest.raises(KDError, match="model.json: changed after the export was made"):
        OCTClassifier.load(copy)
    (copy / "export_complete.json").unlink()  # as if killed before the export finished
    with pytest.raises(KDError, match="incomplete export"):
        OCTClassifier.load(copy)
    with pytest.raises(KDError, match="model.json: does not describe model.safetensors"):
        OCTClassifier.load(copy / "model.safetensors")  # a file with its sidecar: the weights' own record refuses

    edited = Path(shutil.copytree(run, tmp_path / "run"))
    meta_path = edited / "folds" / "fold_1" / "student" / "model.json"
    meta = json.loads(meta_path.read_text())
    for key, value in (("classes", meta["classes"][::-1]), ("arch", "resnet10t")):
        meta_path.write_text(json.dumps({**meta, key: value}))
        with pytest.raises(KDError, match=f"{key}: .* in model.json, .* in the weights"):
            export_run(edited, folds=1, formats="onnx", out_dir=tmp_path / f"bad_{key}")
    (edited / "folds" / "fold_0" / "student" / "done.json").unlink()
    with pytest.raises(KDError, match=r"fold\(s\) \[0\] have no finished 'student'"):
        export_run(edited, folds=0, formats="onnx", out_dir=tmp_path / "unfinished")
