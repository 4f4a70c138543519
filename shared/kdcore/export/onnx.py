"""ONNX export with a dynamic batch dimension, checked by ``onnx.checker``, without the exporting machine's paths.

The dynamo exporter stores Python stack traces (with file paths of this machine) in node metadata, which
:func:`export_onnx` removes before saving.

Example:
    >>> import torch, timm                                                 # doctest: +SKIP
    >>> model = timm.create_model("test_efficientnet", num_classes=3).eval()  # doctest: +SKIP
    >>> export_onnx(model, torch.zeros(2, 3, 32, 32), "model.onnx")["exporter"]  # doctest: +SKIP
    'dynamo'
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

from ..errors import KDError

__all__ = ["ONNX_OPSET", "export_onnx"]

ONNX_OPSET = 18


def export_onnx(model: Any, example: Any, path: str | os.PathLike, opset: int = ONNX_OPSET,
                metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Write ``model`` as ONNX with a dynamic batch dimension, checked by ``onnx.checker``.

    Uses the dynamo exporter (torch's default and future); falls back to the TorchScript-based one when
    it fails, and says which in the returned info. Input and output are named ``input`` and ``output``.
    ``metadata`` is stored in the model's ``metadata_props`` (e.g. the preprocessing contract).
    """
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if example.shape[0] < 2:
        raise ValueError(f"export example needs a batch of at least 2 (a batch of 1 is specialised), "
                         f"got {tuple(example.shape)}")
    model = model.eval()
    tmp = path.with_name(f".{path.name}.tmp")
    exporter, fallback_reason = "dynamo", None
    try:
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), input_names=["input"], output_names=["output"],
                              opset_version=opset, dynamo=True, external_data=False, verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
    except Exception as exc:  # the dynamo exporter raises many error types; the legacy one is the fallback
        exporter, fallback_reason = "torchscript", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), input_names=["input"], output_names=["output"],
                              opset_version=opset, dynamo=False,
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    try:
        proto = onnx.load(str(tmp))
        _strip_onnx_debug_info(proto)
        for key, value in (metadata or {}).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "kdvision"
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise KDError(f"{path.name}: ONNX export is not a valid model: {exc}") from None
    opset_used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    info = {"file": path.name, "exporter": exporter, "opset": int(opset_used), "bytes": path.stat().st_size}
    if fallback_reason:
        info["dynamo_failure"] = fallback_reason
    return info


def _strip_onnx_debug_info(proto: Any) -> None:
    """Drop node metadata (stack traces with the exporting machine's file paths) and doc strings."""

    def clean(graph: Any) -> None:
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
            for attribute in node.attribute:
                if attribute.g is not None and attribute.HasField("g"):
                    clean(attribute.g)
                for sub in attribute.graphs:
                    clean(sub)
        for value in (*graph.input, *graph.output, *graph.value_info):
            del value.metadata_props[:]
            value.doc_string = ""
        del graph.metadata_props[:]
        graph.doc_string = ""

    clean(proto.graph)
    for function in proto.functions:
        for node in function.node:
            del node.metadata_props[:]
            node.doc_string = ""
        del function.metadata_props[:]
    del proto.metadata_props[:]
    proto.doc_string = ""
