"""Exported models on GPUs: the ONNX Runtime provider and the PyTorch device that predict --device chooses,
exports from a model on another device, and the version record. No GPU here: providers and CUDA are faked."""

import numpy as np
import pytest
import torch

import kdcore.export.runtime as runtime
from kdcore.errors import KDError
from kdcore.export import export_onnx, onnx_runner, package_versions, torch_runner
from kdcore.export.folder import model_on_cpu
from kdcore.models import create_model

CUDA_AND_CPU = ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize("device, available, expected", [
    ("auto", CUDA_AND_CPU, [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]),
    ("cuda:1", CUDA_AND_CPU, [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]),
    ("cpu", CUDA_AND_CPU, ["CPUExecutionProvider"]),
    ("auto", ["CPUExecutionProvider"], ["CPUExecutionProvider"]),
])
def test_onnx_provider_follows_the_device(device, available, expected):
    assert runtime._onnx_providers(device, available) == expected


def test_cuda_without_the_cuda_provider_is_an_error_not_a_cpu_run():
    with pytest.raises(KDError, match=r"--device cuda: .*no CUDAExecutionProvider.*onnxruntime-gpu"):
        runtime._onnx_providers("cuda", ["CPUExecutionProvider"])


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cpu:1"])
def test_unknown_device_names_the_option(device):
    with pytest.raises(KDError, match=r"--device"):
        runtime.parse_device(device)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("test_efficientnet", 3, in_chans=3).eval()
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    export_onnx(model, torch.randn(2, 3, 32, 32), path)
    return model, path


def test_cuda_provider_that_fails_to_start_is_reported(tiny_onnx, monkeypatch):
    import onnxruntime as ort

    # onnxruntime-gpu without working CUDA libraries: the provider is listed, the session silently uses the CPU
    monkeypatch.setattr(ort, "get_available_providers", lambda: CUDA_AND_CPU)
    real_session = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", lambda path, options, providers: real_session(
        path, options, providers=["CPUExecutionProvider"]))
    with pytest.raises(KDError, match="could not start its CUDA provider"):
        onnx_runner(tiny_onnx[1], device="cuda")
    run = onnx_runner(tiny_onnx[1], device="cpu")
    assert run(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 3)


def test_pytorch_backends_refuse_cuda_without_it(tiny_onnx, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(KDError, match="CUDA is not available"):
        torch_runner(tiny_onnx[0], device="cuda")
    out = torch_runner(tiny_onnx[0], device="auto")(np.zeros((2, 3, 32, 32), np.float32))
    assert out.shape == (2, 3) and isinstance(out, np.ndarray)


def test_export_of_a_cpu_model_uses_the_model_itself(tiny_onnx):
    # a model on a GPU is copied to the CPU; that branch needs a GPU and is not exercised here
    assert model_on_cpu(tiny_onnx[0]) is tiny_onnx[0]


def test_version_record_names_onnxruntime_gpu():
    assert "onnxruntime-gpu" in package_versions()
