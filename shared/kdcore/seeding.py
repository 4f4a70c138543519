"""One seeding helper for python, numpy, torch and DataLoader workers.

Randomness in training is derived from (run seed, purpose, epoch, sample) so that a resumed run, a run
with more DataLoader workers or a DDP run draws exactly the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np

__all__ = ["seed_everything", "derive_seed", "seed_worker", "rng_state", "set_rng_state"]


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any printable parts (stable across processes, unlike ``hash``).

    Example:
        >>> derive_seed(0, "epoch", 3) == derive_seed(0, "epoch", 3)
        True
    """
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (CPU and CUDA) and choose between reproducible and fast GPU kernels.

    ``deterministic=True``: deterministic cuDNN algorithms, no cuDNN autotuning, cuBLAS with a fixed workspace
    (``CUBLAS_WORKSPACE_CONFIG``, read when cuBLAS starts, so call this before any CUDA work), and torch's
    deterministic implementations wherever one exists. Ops without one (on CUDA e.g. the backward of
    ``AdaptiveAvgPool2d``, in every timm classifier, and of ``nll_loss`` with class weights) only warn: a CUDA run
    repeats its data order, augmentation and initialisation exactly, but not its float rounding, so two runs agree
    closely, not bit for bit. CPU runs are bit-identical.

    ``deterministic=False``: cuDNN autotuning (``cudnn.benchmark``) and TF32 matmuls and convolutions on Ampere
    and later GPUs: faster, same seeds and data order, more run-to-run rounding noise.
    """
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.set_float32_matmul_precision("highest")
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.deterministic = False
        torch.set_float32_matmul_precision("high")  # TF32 matmuls
        torch.backends.cudnn.allow_tf32 = True


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoader: seeds numpy and python from torch's per-worker seed."""
    import torch

    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def rng_state() -> dict:
    """RNG states as plain tensors and lists, loadable with ``torch.load(weights_only=True)``."""
    import torch

    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    py_version, py_internal, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_internal), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # One state per GPU visible when saved. Restore those that still exist: with the same device count the
        # run continues exactly; on fewer GPUs (a checkpoint moved to a smaller machine) the remaining devices
        # keep their streams, where set_rng_state_all would index past the last device and fail.
        saved, visible = state["cuda"], torch.cuda.device_count()
        if len(saved) != visible:
            import logging

            logging.getLogger(__name__).warning(
                "checkpoint holds CUDA RNG states of %d GPU(s), %d visible now: restored %d; the resumed run is "
                "not bit-identical to an uninterrupted one", len(saved), visible, min(len(saved), visible))
        for index, device_state in enumerate(saved[:visible]):
            torch.cuda.set_rng_state(device_state, index)
