"""`make gpu-check` (benchmarks/gpu_check.py): argument handling, the CPU fallback and the JSON layout, on the CPU."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def test_without_cuda_it_says_so_exits_0_and_leaves_results_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu_results.json"
    out.write_text('{"from": "an earlier GPU run"}')
    assert gpu_check.main(["--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "no CUDA device" in said and str(out) in said and "left as it was" in said
    assert json.loads(out.read_text()) == {"from": "an earlier GPU run"}


def test_make_gpu_check_on_this_machine_exits_0():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: make gpu-check would measure for minutes")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", "/nonexistent/x.json"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and "no CUDA device" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.parametrize("argv, message", [
    (["--only", "p9"], "unknown part"),
    (["--only", ","], "unknown part"),
    (["--device", "tpu"], "expected cuda"),
    (["--device", "cpu"], "--allow-cpu"),
])
def test_bad_arguments_are_refused_with_a_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_every_precision_layout_and_compile_combination_is_planned():
    planned = gpu_check.variants(gpu_check.GPUSettings())
    assert len(planned) == 3 * 2 * 2
    assert {(v["precision"], v["channels_last"], v["compile"]) for v in planned} == {
        (p, cl, c) for p in ("fp32", "bf16", "fp16") for cl in (False, True) for c in (False, True)}


class _Counter:
    count = 0


@contextlib.contextmanager
def _fake_count_host_syncs(device=None):
    counter = _Counter()
    counter.count = 6
    yield counter


def test_results_layout_on_the_cpu_with_a_host_sync_counter(tmp_path, monkeypatch):
    fake = types.ModuleType("kdcore.engine.syncs")
    fake.count_host_syncs = _fake_count_host_syncs
    monkeypatch.setitem(sys.modules, "kdcore.engine.syncs", fake)
    out = tmp_path / "g.json"
    assert gpu_check.main(["--quick", "--device", "cpu", "--allow-cpu", "--only", "train_steps,latency",
                           "--out", str(out), "--workdir", str(tmp_path)]) == 0
    results = json.loads(out.read_text())
    assert results["schema"] == gpu_check.SCHEMA and results["device"]["device"] == "cpu"
    assert "not a GPU result" in results["device"]["name"]
    assert {"machine", "settings", "train_steps", "latency", "duration_s"} <= set(results) and "p1" not in results
    rows = results["train_steps"]
    assert [(r["precision"], r["channels_last"]) for r in rows] == [
        ("fp32", False), ("fp32", True), ("fp16", False), ("fp16", True)]
    for row in rows:
        assert "error" not in row, row
        assert row["ms_per_step"] > 0 and row["images_per_s"] > 0 and row["peak_memory_mib"] is None
        assert row["grad_scaler"] == (row["precision"] == "fp16") and row["host_syncs_per_step"] == 6 / 1
    assert results["host_syncs_per_step"]["value"] == 6.0
    latency = results["latency"]
    for name in ("teacher_eager", "student_eager", "student_torchscript", "student_onnxruntime"):
        assert latency[name]["median_ms"] > 0, name
    assert latency["student_onnxruntime"]["provider"] == "CPUExecutionProvider"


def test_without_a_counter_the_host_sync_slot_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "kdcore.engine.syncs", None)  # import fails
    assert gpu_check.host_sync_counter() is None
    results = gpu_check.run_check(torch.device("cpu"), gpu_check.GPUSettings.quick(only=()))
    assert results["host_syncs_per_step"]["value"] is None
    assert "no host-sync counter" in results["host_syncs_per_step"]["note"]
