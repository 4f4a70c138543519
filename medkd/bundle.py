"""A MONAI bundle of an exported OCT classifier, verified with MONAI's own bundle tools.

Layout (MONAI Bundle Specification)::

    BUNDLE/LICENSE
    BUNDLE/configs/metadata.json     schema 20240725: versions, task, classes, network_data_format
    BUNDLE/configs/inference.json    ConfigParser config: network_def (timm), preprocessing, run
    BUNDLE/models/model.pt           state dict (torch.load(..., weights_only=True))
    BUNDLE/models/model.ts           TorchScript with metadata.json and inference.json inside
    BUNDLE/models/model.onnx         the same network in ONNX
    BUNDLE/docs/README.md, docs/data_license.txt

The preprocessing in ``inference.json`` reproduces :func:`medkd.preprocess.preprocess`: MONAI loads the
image (PIL, greyscale) and pads and scales it; the resize step is OpenCV's (an expression in the config),
because MONAI's ``Resize(mode="area")`` (adaptive average pooling) differs from ``cv2.INTER_AREA`` by up to
~27 grey levels on real B-scans. Paths in the configs are relative to ``bundle_root`` (default ``.``).

Check a bundle offline (no schema download) with :func:`verify_bundle`, or with MONAI's command line::

    python -m monai.bundle verify_metadata --meta_file BUNDLE/configs/metadata.json --filepath SCHEMA.json
    python -m monai.bundle verify_net_in_out network_def --meta_file BUNDLE/configs/metadata.json \\
        --config_file BUNDLE/configs/inference.json
    python -m monai.bundle run --config_file BUNDLE/configs/inference.json --bundle_root BUNDLE \\
        --input_dir IMAGES --output_file predictions.csv
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Mapping

from kdcore.atomic import atomic_torch_save, atomic_write_json, atomic_write_text
from kdcore.errors import KDError
from kdcore.export import package_versions

__all__ = ["SCHEMA_URL", "write_bundle", "bundle_metadata", "bundle_inference_config", "verify_bundle",
           "bundle_preprocessing", "REFERENCES"]

SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
BUNDLE_VERSION = "1.0.0"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".tif", ".tiff", ".bmp")

REFERENCES = {
    "kd-oct": "KD-OCT: knowledge distillation for retinal OCT classification, github.com/erfan-nourbakhsh/KD-OCT",
    "neh": "Sotoudeh-Paima S., Jodeiri A., Hajizadeh F., Soltanian-Zadeh H., Multi-scale convolutional neural network "
           "for automated AMD classification using retinal OCT images, Computers in Biology and Medicine (2022), "
           "arXiv:2110.03002",
    "oct2017": "Kermany D. et al., Identifying Medical Diagnoses and Treatable Diseases by Image-Based Deep Learning, "
               "Cell 172(5):1122-1131 (2018); data: Mendeley Data doi:10.17632/rscbjbr9sj (CC BY 4.0)",
}
DATA_SOURCES = {
    "neh": "NEH retinal OCT dataset (Noor Eye Hospital), Mendeley Data 8kt969dhx6; Heidelberg Spectralis B-scans",
    "oct2017": "OCT2017 (Kermany et al., UCSD), Mendeley Data doi:10.17632/rscbjbr9sj; Heidelberg Spectralis B-scans",
}


def _value_range(spec: Mapping[str, Any]) -> list[float]:
    mean, std = float(spec["mean"][0]), float(spec["std"][0])
    return [round((0.0 - mean) / std, 6), round((1.0 - mean) / std, 6)]


def bundle_metadata(contract: Mapping[str, Any]) -> dict[str, Any]:
    """``configs/metadata.json`` for the contract of an OCT export."""
    spec, classes, source = contract["input"], list(contract["classes"]), contract.get("source", {})
    data_format = contract.get("data_format") or "unknown"
    versions = package_versions(("monai", "torch", "numpy", "timm", "opencv-python-headless", "pillow"))
    channel_def = {str(i): name for i, name in enumerate(classes)}
    size = int(spec["size"])
    commit = source.get("git_commit")
    role = contract.get("role") or source.get("role")
    what = {"student": "student distilled from a larger teacher", "teacher": "teacher",
            "baseline": "baseline trained without distillation"}.get(role, f"{role or 'model'}")
    return {
        "schema": SCHEMA_URL,
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"exported from run {source.get('run')} fold {source.get('fold')} "
                                      f"({source.get('model')}, weights {source.get('kept')})"},
        "monai_version": versions["monai"],
        "pytorch_version": versions["torch"],
        "numpy_version": versions["numpy"],
        "required_packages_version": {"timm": versions["timm"], "pillow": versions["pillow"],
                                      "opencv-python-headless": versions["opencv-python-headless"]},
        "name": f"Retinal OCT B-scan classification ({contract['arch']}, {what})",
        "task": f"Retinal OCT B-scan classification into {', '.join(classes)}",
        "description": (f"A {contract['arch']} {what} (KD-OCT recipe "
                        f"{source.get('recipe')!r}, fold {source.get('fold')}, fold manifest {source.get('manifest')}, "
                        f"code commit {commit[:12] if commit else 'unknown'}). Input: one greyscale B-scan letterboxed "
                        f"to {size}x{size} (aspect kept, black padding) and standardised. Output: class logits; "
                        "softmax gives probabilities. Research use only: not a medical device."),
        "authors": "kdvision export (trained by the run's owner)",
        "copyright": "Copyright (c) the owner of the training run; code and configs Apache-2.0 (see LICENSE)",
        "data_source": DATA_SOURCES.get(data_format, f"dataset format {data_format!r} (see the run's data card)"),
        "data_type": "jpeg/png greyscale images",
        "image_classes": (f"single channel greyscale B-scan, letterboxed to {size}x{size}, "
                          f"(x / 255 - {spec['mean'][0]}) / {spec['std'][0]}"),
        "label_classes": f"one label per image: {', '.join(f'{i} = {c}' for i, c in enumerate(classes))}",
        "pred_classes": f"{len(classes)} logits in the order {', '.join(classes)}; softmax gives class probabilities",
        "eval_metrics": contract.get("metrics", {}),
        "intended_use": ("Research on knowledge distillation for retinal OCT classification. Not a medical device; "
                         "not for diagnosis, screening or treatment decisions."),
        "references": [REFERENCES["kd-oct"]] + ([REFERENCES[data_format]] if data_format in REFERENCES else []),
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "magnitude", "modality": "OCT", "num_channels": 1,
                "spatial_shape": [size, size], "dtype": "float32", "value_range": _value_range(spec),
                "is_patch_data": False, "channel_def": {"0": "image"}}},
            "outputs": {"pred": {
                "type": "logits", "format": "classes", "num_channels": len(classes), "spatial_shape": [1],
                "dtype": "float32", "value_range": [], "is_patch_data": False, "channel_def": channel_def}},
            "post_processed_outputs": {"pred": {
                "type": "probabilities", "format": "classes", "num_channels": len(classes), "spatial_shape": [1],
                "dtype": "float32", "value_range": [0, 1], "is_patch_data": False, "channel_def": channel_def}},
        },
    }


def bundle_inference_config(contract: Mapping[str, Any]) -> dict[str, Any]:
    """``configs/inference.json``: a ConfigParser config that classifies every image of ``input_dir``."""
    spec = contract["input"]
    lo, hi = _value_range(spec)
    shape = "x.shape[1:]"
    resize = ("$lambda x: cv2.resize(numpy.asarray(x[0], dtype=numpy.uint8), "
              f"(max(1, round(x.shape[2] * (@input_size / max({shape})))), "
              f"max(1, round(x.shape[1] * (@input_size / max({shape}))))), "
              f"interpolation=cv2.INTER_AREA if @input_size < max({shape}) else cv2.INTER_LINEAR)[None]")
    return {
        "imports": ["$import os", "$import glob", "$import csv", "$import numpy", "$import cv2", "$import torch",
                    "$import timm"],
        "bundle_root": ".",
        "weights_file": "$os.path.join(@bundle_root, 'models', 'model.pt')",
        "input_dir": "$@bundle_root + '/samples'",
        "output_file": "predictions.csv",
        "device": "$torch.device('cpu')",
        "class_names": list(contract["classes"]),
        "input_size": int(spec["size"]),
        "network_def": {"_target_": "timm.create_model", "model_name": contract["arch"],
                        "num_classes": int(contract["num_outputs"]), "in_chans": int(contract.get("in_chans", 1)),
                        "pretrained": False},
        "network": "$@network_def.to(@device)",
        "letterbox_resize": resize,
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "reader": "PILReader", "reverse_indexing": False,
             "converter": "$lambda image: image.convert('L')", "image_only": True, "dtype": "$numpy.uint8"},
            {"_target_": "EnsureChannelFirstd", "keys": "image", "channel_dim": "no_channel"},
            {"_target_": "Lambdad", "keys": "image", "func": "@letterbox_resize"},
            {"_target_": "SpatialPadd", "keys": "image", "spatial_size": ["@input_size", "@input_size"],
             "method": "symmetric", "mode": "constant", "value": 0},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0.0, "a_max": 255.0,
             "b_min": lo, "b_max": hi},
            {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32", "track_meta": False},
        ]},
        "postprocessing": "$lambda logits: torch.softmax(logits.float(), dim=1)",
        "datalist": ("$sorted(f for f in glob.glob(os.path.join(@input_dir, '*')) "
                     f"if f.lower().endswith({IMAGE_SUFFIXES!r}))"),
        # no_grad as a decorator: running the bundle must not switch gradients off for its host process.
        "predict": ("$torch.no_grad()(lambda path: @postprocessing(@network("
                    "@preprocessing({'image': path})['image'][None].to(@device)))[0].tolist())"),
        "write_predictions": ("$lambda rows: csv.writer(open(@output_file, 'w', newline='')).writerows("
                              "[['image', 'class'] + ['prob_' + c for c in @class_names]] + "
                              "[[os.path.basename(f), @class_names[max(range(len(p)), key=p.__getitem__)]] + "
                              "['%.6f' % v for v in p] for f, p in rows])"),
        "initialize": [
            ("$@network.load_state_dict(torch.load(@weights_file, map_location=@device, weights_only=True))"),
            "$@network.eval()",
        ],
        "run": ["$@write_predictions([(f, @predict(f)) for f in @datalist])"],
        "finalize": [],
    }


def write_bundle(bundle_dir: str | os.PathLike, model: Any, contract: Mapping[str, Any], *,
                 torchscript: str | os.PathLike, onnx: str | os.PathLike | None = None, readme: str = "",
                 data_license: str = "") -> Path:
    """Write the bundle folder from an exported model (TorchScript from the export, state dict from ``model``)."""
    import torch
    from monai.data import save_net_with_metadata

    bundle = Path(bundle_dir)
    if bundle.exists():
        shutil.rmtree(bundle)
    (bundle / "models").mkdir(parents=True)
    metadata = bundle_metadata(contract)
    inference = bundle_inference_config(contract)
    atomic_write_json(bundle / "configs" / "metadata.json", metadata)
    atomic_write_json(bundle / "configs" / "inference.json", inference)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    atomic_torch_save(state, bundle / "models" / "model.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation: TorchScript is what MONAI bundles carry
        traced = torch.jit.load(str(torchscript), map_location="cpu")
        save_net_with_metadata(traced, str(bundle / "models" / "model.ts"), include_config_vals=False,
                               meta_values=metadata, more_extra_files={"inference": json.dumps(inference).encode()})
    if onnx is not None:
        shutil.copyfile(onnx, bundle / "models" / "model.onnx")
    atomic_write_text(bundle / "LICENSE", _LICENSE)
    atomic_write_text(bundle / "docs" / "README.md", readme or _default_readme(contract))
    atomic_write_text(bundle / "docs" / "data_license.txt", data_license or _data_license(contract))
    return bundle


def bundle_preprocessing(bundle_dir: str | os.PathLike) -> Any:
    """The bundle's own preprocessing (parsed from its inference.json): ``f(path) -> (1, S, S) tensor``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(Path(bundle_dir) / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transform = parser.get_parsed_content("preprocessing")

    def run(path: str | os.PathLike) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI warns that PIL's read-only arrays become tensors
            return transform({"image": str(path)})["image"]

    return run


def verify_bundle(bundle_dir: str | os.PathLike, schema: str | os.PathLike | None = None) -> dict[str, Any]:
    """MONAI's checks in-process: network input/output against the metadata, and (given a local copy of the
    schema, here or in ``KDVISION_MONAI_SCHEMA``; offline machines cannot download it) the metadata against
    the bundle schema."""
    import tempfile

    from monai.bundle import verify_metadata, verify_net_in_out

    bundle = Path(bundle_dir)
    schema = schema or os.environ.get("KDVISION_MONAI_SCHEMA") or None
    meta, config = bundle / "configs" / "metadata.json", bundle / "configs" / "inference.json"
    for needed in (meta, config, bundle / "models" / "model.pt"):
        if not needed.is_file():
            raise KDError(f"{needed}: missing from the MONAI bundle")
    result: dict[str, Any] = {}
    monai_log = logging.getLogger("monai.bundle")
    level = monai_log.level
    monai_log.setLevel(logging.WARNING)  # MONAI logs every argument at INFO
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            verify_net_in_out("network_def", meta_file=str(meta), config_file=str(config), device="cpu")
        result["verify_net_in_out"] = "passed"
    except Exception as exc:  # MONAI raises ValueError/KeyError/RuntimeError
        raise KDError(f"{bundle}: MONAI verify_net_in_out failed: {exc}") from None
    finally:
        monai_log.setLevel(level)
    if schema is None:
        result["verify_metadata"] = "not run (no local copy of the metadata schema)"
        return result
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / Path(schema).name
        shutil.copyfile(schema, copy)  # verify_metadata may write beside the schema file
        monai_log.setLevel(logging.WARNING)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "no hash value provided": the schema is a local copy
                verify_metadata(meta_file=str(meta), filepath=str(copy))
        except Exception as exc:
            raise KDError(f"{meta}: MONAI verify_metadata failed: {exc}") from None
        finally:
            monai_log.setLevel(level)
    result["verify_metadata"] = f"passed ({Path(schema).name})"
    return result


def _default_readme(contract: Mapping[str, Any]) -> str:
    spec = contract["input"]
    return f"""# Retinal OCT B-scan classifier ({contract['arch']})

A distilled student exported by kdvision. Research use only: not a medical device, not for diagnosis.

## Input

One greyscale B-scan (any size). Letterbox to {spec['size']}x{spec['size']}: scale the longer side to {spec['size']}
(OpenCV INTER_AREA when shrinking, INTER_LINEAR when enlarging), keep the aspect ratio, centre it on a black
canvas; then `(x / 255 - {spec['mean'][0]}) / {spec['std'][0]}`. `configs/inference.json` does exactly this.

## Output

{len(contract['classes'])} logits in the order {', '.join(contract['classes'])}; softmax gives probabilities.

## Run

    python -m monai.bundle run --config_file configs/inference.json --bundle_root . \\
        --input_dir IMAGES --output_file predictions.csv

`models/model.ts` (TorchScript) and `models/model.onnx` hold the same network for applications without MONAI.
"""


def _data_license(contract: Mapping[str, Any]) -> str:
    data_format = contract.get("data_format") or "unknown"
    source = DATA_SOURCES.get(data_format, f"the dataset of format {data_format!r} used for training")
    return (f"The weights were trained on {source}.\nTheir use is subject to that dataset's licence and terms; "
            "check them at the dataset's source before redistributing the weights or using them.\n")


_LICENSE = """The configuration files and documentation of this bundle are licensed under the Apache License,
Version 2.0 (https://www.apache.org/licenses/LICENSE-2.0), like the kdvision code that produced them.

The model weights (models/) were derived from the training data described in docs/data_license.txt; their
use is subject to that data's licence as well.

Unless required by applicable law or agreed to in writing, this bundle is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. It is not a medical device.
"""
