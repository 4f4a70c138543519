"""kdcore.export and kdcore.modelcard: exporters, parity rule, fold choice, path hygiene, card sections."""

from __future__ import annotations

import json
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from kdcore.errors import KDError
from kdcore.export import (ParityCheck, RunModel, check_parity, compare_outputs, export_onnx, export_torchscript,
                           find_absolute_paths, lower_is_better, measure_latency_ms, onnx_runner, pick_items,
                           read_sidecar, run_data_root, select_folds, torch_runner, torchscript_runner, write_parity,
                           write_sidecar, SIDECAR_FORMAT, SIDECAR_VERSION)
from kdcore.modelcard import data_section, latency_section, metrics_section, render_model_card
from kdcore.models import create_model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("test_efficientnet", 3, in_chans=3).eval()


def test_compare_outputs_numbers_by_hand():
    reference = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]])
    outputs = reference + np.array([[1e-5, 0, 0], [0, -3e-5, 0]])
    check = compare_outputs(reference, outputs, "m.onnx", classification=True)
    assert check.max_abs_diff == pytest.approx(3e-5)
    assert check.mean_abs_diff == pytest.approx(4e-5 / 6)
    assert check.tolerance == pytest.approx(1e-4 + 1e-4 * 5.0)
    assert check.passed and check.argmax_agreement == 1.0 and check.n_inputs == 2

    bad = compare_outputs(reference, reference + 0.01, "m.ts", classification=True)
    assert not bad.passed
    with pytest.raises(KDError, match=r"m\.ts: max \|diff\| 0\.01"):
        bad.raise_if_failed()
    assert not compare_outputs(reference, reference * np.nan, "x", classification=False).passed


def test_any_argmax_flip_fails_and_near_ties_are_counted():
    reference = np.array([[1.0, 1.00001, 0.0], [0.0, 1.0, 0.0]])
    check = compare_outputs(reference, np.array([[1.00002, 1.0, 0.0], [0.0, 1.0, 0.0]]), "x", classification=True)
    assert check.max_abs_diff <= check.tolerance  # numerically close ...
    assert not check.passed  # ... but the top class of the first input changed
    assert check.argmax_agreement == 0.5 and check.argmax_near_ties == 1
    assert compare_outputs(reference, reference, "x", classification=False).argmax_agreement is None


def test_int8_gate_refusal_says_how_undecided_the_float32_model_was_on_the_changed_inputs():
    from kdcore.export import int8_gate

    reference = np.array([[2.0, 1.99, 0.0], [0.0, 3.0, 0.0], [5.0, 0.0, 1.0], [0.0, 0.5, 0.0]])
    outputs = reference.copy()
    outputs[0] = [1.99, 2.0, 0.0]   # a near-tie flips
    outputs[3] = [0.6, 0.5, 0.0]    # a clearer decision flips
    check = int8_gate(reference, outputs, classification=True)
    assert not check.passed and check.argmax_agreement == 0.5 and check.changed == 2
    assert check.changed_margins == pytest.approx([0.01, 0.5])
    assert check.median_margin == pytest.approx(np.median([0.01, 3.0, 4.0, 0.5]))
    with pytest.raises(KDError, match=r"2 changed class, where float32's top two outputs were 0\.01, 0\.5 apart"):
        check.raise_if_failed()


def test_onnx_export_is_valid_dynamic_and_path_free(tiny, tmp_path):
    import onnx

    info = export_onnx(tiny, torch.randn(2, 3, 32, 32), tmp_path / "m.onnx", metadata={"contract": "{}"})
    assert info["exporter"] == "dynamo" and info["opset"] >= 17
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert {p.key: p.value for p in proto.metadata_props} == {"contract": "{}"}
    assert all(len(node.metadata_props) == 0 for node in proto.graph.node)
    data = (tmp_path / "m.onnx").read_bytes()
    assert b"site-packages" not in data and sys.prefix.encode() not in data
    run = onnx_runner(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = tiny(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run(x), expected, atol=1e-5)
    np.testing.assert_allclose(run(x[:1]), expected[:1], atol=1e-5)


def test_torchscript_export_keeps_extra_files(tiny, tmp_path):
    export_torchscript(tiny, torch.randn(2, 3, 32, 32), tmp_path / "m.ts", {"model.json": '{"a": 1}'})
    files = {"model.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation
        torch.jit.load(str(tmp_path / "m.ts"), _extra_files=files)
    assert json.loads(files["model.json"]) == {"a": 1}
    x = np.ones((2, 3, 32, 32), np.float32)
    np.testing.assert_allclose(torchscript_runner(tmp_path / "m.ts")(x), torch_runner(tiny)(x), atol=1e-6)
    # no Python stacks of this machine (compressed *.debug_pkl records), no copy of the example inputs
    with zipfile.ZipFile(tmp_path / "m.ts") as archive:
        names = archive.namelist()
        assert names[0].startswith("m/") and "m/extra/model.json" in names
        assert not [n for n in names if n.endswith(".debug_pkl") or "traced_inputs" in n]
        assert not any(sys.prefix.encode() in archive.read(n) for n in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ts"]  # no temporary file left


def test_check_parity_names_the_failing_artefact(tiny):
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    reference = torch_runner(tiny)
    checks = check_parity(reference, {"same": reference}, x, classification=True)
    assert checks[0].passed and checks[0].max_abs_diff < 1e-6  # batch of 2 vs one at a time
    with pytest.raises(KDError, match="parity check failed for broken"):
        check_parity(reference, {"broken": lambda b: reference(b) + 0.5}, x, classification=False)


def _entry(fold: int, score, monitor: str, mode: str | None = None) -> RunModel:
    meta = {"best_score": score, "monitor": monitor} | ({"mode": mode} if mode else {})
    return RunModel(Path("run"), fold, "student", Path(f"w{fold}.safetensors"), meta)


def test_fold_choice():
    losses = {0: _entry(0, 0.4, "loss"), 1: _entry(1, 0.2, "loss"), 2: _entry(2, 0.3, "loss")}
    assert select_folds(losses, None) == [1]
    accuracies = {k: _entry(k, s, "balanced_accuracy") for k, s in enumerate((0.7, 0.9, 0.8))}
    assert select_folds(accuracies, None) == [1]
    nme = {k: _entry(k, s, "nme") for k, s in enumerate((0.07, 0.05))}
    assert select_folds(nme, None) == [1]
    assert select_folds(losses, "all") == [0, 1, 2] and select_folds(losses, 2) == [2]
    assert select_folds(losses, [2, 0]) == [0, 2]
    with pytest.raises(KDError, match=r"fold\(s\) \[7\]"):
        select_folds(losses, [7])
    with pytest.raises(KDError, match="no fold has a best_score"):
        select_folds({0: _entry(0, None, "loss")}, None)
    assert lower_is_better("val_loss") and not lower_is_better("auc") and lower_is_better("acc", mode="min")
    assert not lower_is_better("f1_macro")  # 'f1' is not the failure rate 'fr'


def test_fold_choice_follows_the_recorded_mode_before_the_name():
    # the trainer writes the monitor's direction as "mode"; the name heuristic is only for older runs
    scores = (0.4, 0.2, 0.3)
    assert select_folds({k: _entry(k, s, "score", "min") for k, s in enumerate(scores)}, None) == [1]
    assert select_folds({k: _entry(k, s, "score", "max") for k, s in enumerate(scores)}, None) == [0]
    assert select_folds({k: _entry(k, s, "val_loss", "max") for k, s in enumerate(scores)}, None) == [0]
    assert select_folds({k: _entry(k, s, "score") for k, s in enumerate(scores)}, None) == [0]  # old run: higher
    with pytest.raises(KDError, match=r"w0\.json: monitor mode 'lowest'"):
        select_folds({k: _entry(k, s, "nme", "lowest") for k, s in enumerate(scores)}, None)


def test_pick_items_prefers_groups_and_spreads_labels():
    items = [{"id": f"{label}{i}", "label": label, "patient": f"p{i % 3}"} for label in "ab" for i in range(6)]
    picked = pick_items(items, 4, groups=["p0"])
    assert {i["patient"] for i in picked} == {"p0"} and [i["label"] for i in picked] == ["a", "b", "a", "b"]
    assert len(pick_items(items, 5)) == 5 and len(pick_items(items, 50)) == 12


def test_absolute_paths_are_found_only_as_folders(tmp_path):
    (tmp_path / "a.json").write_text('{"root": "/home/alice/data/x.png"}')
    (tmp_path / "b.txt").write_text("see /home/alicexyz and /workspace")
    hits = find_absolute_paths(tmp_path, ["/home/alice", "/work"])
    assert hits == [("a.json", "/home/alice")]
    with zipfile.ZipFile(tmp_path / "c.ts", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("c/code/x.debug_pkl", "File /work/lib/x.py, line 3" * 20)  # compressed: hidden in raw bytes
    assert b"/work/" not in (tmp_path / "c.ts").read_bytes()
    assert find_absolute_paths(tmp_path, ["/home/alice", "/work"])[1:] == [("c.ts:c/code/x.debug_pkl", "/work")]


def test_sidecar_round_trip_and_errors(tmp_path):
    contract = {"format": SIDECAR_FORMAT, "format_version": SIDECAR_VERSION, "task": "classification",
                "arch": "test_resnet", "num_outputs": 3,
                "input": {"size": 8, "channels": 1, "mean": [0.5], "std": [0.2]}}
    write_sidecar(tmp_path / "model.onnx", contract)
    assert read_sidecar(tmp_path / "model.ts") == contract
    with pytest.raises(KDError, match="sidecar of m.onnx not found"):
        read_sidecar(tmp_path / "m.onnx")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(KDError, match="invalid JSON"):
        read_sidecar(tmp_path / "bad.onnx")


@pytest.mark.parametrize("change, message", [
    ({"format": "something-else"}, 'not an export sidecar'),
    ({"format_version": SIDECAR_VERSION + 1}, "format_version 2 is not one this package reads"),
    ({"format_version": "1"}, "format_version '1' is not one"),
    ({"input": {"size": 8, "channels": 1, "mean": [0.5]}}, r"missing key\(s\) input.std"),
    ({"arch": None, "task": None}, r"missing key\(s\) task, arch "),
])
def test_sidecar_refuses_foreign_newer_or_incomplete_contracts(tmp_path, change, message):
    contract = {"format": SIDECAR_FORMAT, "format_version": SIDECAR_VERSION, "task": "classification",
                "arch": "test_resnet", "num_outputs": 3,
                "input": {"size": 8, "channels": 1, "mean": [0.5], "std": [0.2]}}
    write_sidecar(tmp_path / "model.onnx", {k: v for k, v in {**contract, **change}.items() if v is not None})
    with pytest.raises(KDError, match=f"model.json: {message}"):
        read_sidecar(tmp_path / "model.onnx")


def test_parity_file_merges_checks(tmp_path):
    first = ParityCheck("a", 2, "real", 0.0, 0.0, 1e-4, 1e-4, 1e-4, True)
    write_parity(tmp_path, [first])
    write_parity(tmp_path, [ParityCheck("b", 2, "real", 1.0, 1.0, 1e-4, 1e-4, 1e-4, False)], {"k": "v"})
    data = json.loads((tmp_path / "parity.json").read_text())
    assert [c["artefact"] for c in data["checks"]] == ["a", "b"] and data["passed"] is False
    assert data["extra"] == {"k": "v"} and "atol + rtol" in data["rule"]


def test_data_root_resolution(tmp_path):
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"format": "synthetic"}}))
    assert run_data_root(run) == run / "data"  # synthetic data generated inside the run
    (tmp_path / "images").mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"root": "../images"}}))
    assert run_data_root(run).resolve() == (tmp_path / "images").resolve()
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"root": str(tmp_path / "gone")}}))
    assert run_data_root(run) is None


def test_latency_numbers():
    timing = measure_latency_ms(lambda x: x * 2, np.ones(3), warmup=1, runs=5)
    assert timing["runs"] == 5 and 0 <= timing["p25_ms"] <= timing["median_ms"] <= timing["p75_ms"]
    text = latency_section({"threads": 1, "input_shape": [1, 1, 8, 8], "onnxruntime": timing,
                            "machine": {"cpu_count": 2, "processor": "CPU X"}})
    assert "CPU X with 2 cores" in text and "| onnxruntime |" in text


def test_card_sections(tmp_path):
    assert "`report.json` is missing" in metrics_section(None, "student", ["accuracy"])
    report = {"models": {"student": {"summary": {"auc": {"mean": 0.91, "std": None, "ci95": None},
                                                 "accuracy": {"mean": 0.8, "std": 0.1, "ci95": [0.7, 0.9]}}}}}
    text = metrics_section(report, "student", ["accuracy", "auc"])
    assert text.index("| accuracy | 0.8 | 0.1 | [0.7, 0.9] |") < text.index("| auc | 0.91 | n/a | n/a |")
    assert "no calibration metric" in text
    items = [{"label": "A", "patient": "p1"}, {"label": "A", "patient": "p2"}, {"label": "B", "patient": "p2"}]
    (tmp_path / "dataset.json").write_text(json.dumps({"items": items}))
    (tmp_path / "audit.json").write_text(json.dumps({"problems": [{"severity": "warning"}] * 2, "excluded": ["x"]}))
    section = data_section(tmp_path)
    assert "3 items from 2 patients" in section and "| A | 2 |" in section
    assert "2 warning; excluded items: 1" in section
    card = render_model_card("T", "summary", [section, ""])
    assert card.startswith("# T\n\nsummary\n\n## Data") and card.endswith("\n")
