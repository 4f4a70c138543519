"""Export a trained network to ONNX and TorchScript, and prove the copies compute what the original does.

Exported files are checked on the spot (:mod:`.parity`): ONNX Runtime and TorchScript outputs are compared
with the PyTorch model's on the same inputs, at the full batch and one input at a time. Every export folder
carries a JSON sidecar (:mod:`.sidecar`) with the preprocessing contract, so an application needs nothing
from the training code, and no absolute path of the exporting machine.

Modules: :mod:`.onnx`, :mod:`.torchscript` (exporters), :mod:`.parity` (the parity rule), :mod:`.runtime`
(running exported files, latency), :mod:`.quantize` (int8 students, gated), :mod:`.sidecar` (contract file,
path hygiene), :mod:`.runs` (reading run folders, fold choice), :mod:`.folder` (one verified export folder),
:mod:`.run_export` (exporting a run's model: the skeleton a vertical's :class:`Exporter` fills).
"""

from .folder import export_model, measure_export_latency, parse_formats
from .onnx import ONNX_OPSET, export_onnx
from .quantize import INT8_FILE, Int8Check, export_int8, int8_gate, quantize_int8
from .parity import ATOL, RTOL, ParityCheck, check_parity, compare_outputs, write_parity
from .run_models import (RunModel, find_run_models, load_run_model, lower_is_better, pick_items, read_run_file,
                   report_means, run_data_root, run_items, run_source, select_folds)
from .runtime import (load_runner, machine_info, measure_latency_ms, onnx_runner, package_versions, resolve_export,
                      torch_runner, torchscript_runner)
from .sidecar import (COMPLETE_MARKER, SIDECAR, SIDECAR_FORMAT, SIDECAR_VERSION, assert_no_absolute_paths,
                      check_export_complete, find_absolute_paths, read_sidecar, write_export_marker, write_sidecar)
from .torchscript import export_torchscript
from .run_export import Exporter  # noqa: E402 - last: it needs kdcore.modelcard, which reads run folders above

__all__ = [
    # exporting and checking
    "SIDECAR", "ONNX_OPSET", "ATOL", "RTOL", "ParityCheck", "export_onnx", "export_torchscript", "compare_outputs",
    "check_parity", "write_parity", "export_model", "parse_formats", "measure_latency_ms", "measure_export_latency", "machine_info",
    "package_versions", "SIDECAR_FORMAT", "SIDECAR_VERSION", "write_sidecar", "read_sidecar", "find_absolute_paths",
    "assert_no_absolute_paths", "COMPLETE_MARKER", "write_export_marker", "check_export_complete",
    "INT8_FILE", "Int8Check", "export_int8", "int8_gate", "quantize_int8", "Exporter",
    # running exported files
    "onnx_runner", "torchscript_runner", "torch_runner", "resolve_export", "load_runner",
    # reading run folders
    "RunModel", "find_run_models", "lower_is_better", "select_folds", "load_run_model", "read_run_file", "run_source",
    "report_means", "run_data_root", "run_items", "pick_items",
]
