"""predict --device is one option, declared in kdcore.cli, in both verticals."""

import importlib

import pytest


@pytest.mark.parametrize("tool", ["medkd", "facekd"])
def test_predict_takes_a_device(tool):
    parser = importlib.import_module(f"{tool}.cli").build_parser()
    extra = ["--out", "o"] if tool == "facekd" else []
    assert parser.parse_args(["predict", "m", "i.png", *extra]).device == "auto"
    assert parser.parse_args(["predict", "m", "i.png", "--device", "cuda:1", *extra]).device == "cuda:1"
