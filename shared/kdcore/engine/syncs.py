"""Count host synchronisations: the points where Python waits for a device value (``.item()``, ``bool(t)``, ...).

On a GPU every such read stalls the launch queue until the kernels before it have run; a training loop that
reads a value per micro-batch keeps the GPU idle between batches. :func:`count_host_syncs` counts them:

* on CUDA with ``torch.cuda.set_sync_debug_mode("warn")``, which reports every synchronising call torch makes;
* elsewhere (the CPU, where nothing really waits) by intercepting, with a ``TorchFunctionMode``, the calls that
  would synchronise if the tensors lived on a GPU: scalar reads, ``tolist``/``numpy``/``cpu``, ``nonzero``,
  ``unique``, ``masked_select`` and boolean-mask indexing (whose output size depends on the data). Reads inside
  ``torch.optim`` and ``torch.utils.data`` are left out: optimizers keep their step counters on the CPU on every
  device (unless ``capturable``) and the DataLoader draws its seeds on the CPU, so those reads wait for nothing.

Example:
    >>> import torch
    >>> x = torch.ones(3)
    >>> with count_host_syncs() as syncs:
    ...     total = float(x.sum())          # one read of a value
    ...     y = (x * 2).sum()               # no read: stays on the device
    >>> syncs.count
    1
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["SyncCount", "count_host_syncs"]

_SCALAR_READS = {"item", "__bool__", "__int__", "__float__", "__index__", "tolist", "numpy", "cpu", "nonzero",
                 "argwhere", "unique", "unique_consecutive", "masked_select", "nonzero_static"}


@dataclass
class SyncCount:
    """Host synchronisations seen inside :func:`count_host_syncs`; ``by_call`` names what caused them."""

    count: int = 0
    by_call: Counter = field(default_factory=Counter)
    method: str = "torch_function"

    def add(self, name: str) -> None:
        self.count += 1
        self.by_call[name] += 1


def _is_bool_index(index: object) -> bool:
    if isinstance(index, torch.Tensor):
        return index.dtype == torch.bool
    if isinstance(index, (tuple, list)):
        return any(_is_bool_index(part) for part in index)
    return False


_HOST_SIDE = (os.path.join("torch", "optim") + os.sep, os.path.join("torch", "utils", "data") + os.sep)


def _inside_host_side_torch(depth: int = 12) -> bool:
    frame = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            return False
        if any(part in frame.f_code.co_filename for part in _HOST_SIDE):
            return True
        frame = frame.f_back
    return False


class _CountingMode(TorchFunctionMode):
    def __init__(self, record: SyncCount):
        super().__init__()
        self.record = record

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in _SCALAR_READS:
            if not _inside_host_side_torch():
                self.record.add(name)
        elif name == "__getitem__" and len(args) > 1 and _is_bool_index(args[1]):
            self.record.add("boolean-mask indexing")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_host_syncs(device: torch.device | str | None = None) -> Iterator[SyncCount]:
    """Count host synchronisations of the code inside the ``with`` block.

    Args:
        device: where the code runs; on a CUDA device torch's own sync debug mode counts real synchronisations,
            anywhere else the emulation described in the module docstring counts would-be ones.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    record = SyncCount()
    if device.type == "cuda":
        record.method = "cuda_sync_debug_mode"
        previous = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield record
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        for warning in caught:
            if "synchroniz" in str(warning.message):
                record.add(str(warning.message).split("\n")[0][:80])
        return
    with _CountingMode(record):
        yield record
