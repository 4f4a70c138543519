"""Setting up and closing a run: the run folder opened (or undone on failure), the one manifest per run, the data
root, model profiles, the report once every fold is finished."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Iterator
from typing import Callable

import torch
from torch import nn

from .cv import FoldManifest, load_manifest
from .engine.distributed import (all_gather_objects, barrier, broadcast_object, is_distributed, is_main_process, rank,
                                 world_size)
from .errors import ConfigError, DataError, KDError
from .logs import add_log_redaction, get_logger, redact_paths, set_progress, setup_logging
from .models import count_flops, count_parameters, measure_latency
from .run_folder import RunDir, release_run_folder

__all__ = ["open_run", "undo_new_folder_on_error", "manifest_for_run", "finish_run", "profile_models",
           "main_process_first", "resolve_data_root", "check_shared_folder"]


def main_process_first(make: Callable[[], None]) -> None:
    """Run ``make`` (e.g. writing a synthetic dataset) on rank 0 while the other ranks wait for it."""
    if is_main_process():
        make()
    barrier()


def resolve_data_root(data: Any, run_path: Path | None, write_synthetic: Callable[[Path], None],
                      synthetic_format: str) -> tuple[Path, str]:
    """``(data root, on-disk format)`` of a recipe's ``data`` section (``format``, ``root``).

    A ``synthetic`` dataset lives in ``data.root`` or else the run's ``data/`` folder; ``write_synthetic(root)``
    makes it there (when missing) on rank 0 while the other ranks wait, and it is read as ``synthetic_format``.
    """
    if data.format == "synthetic":
        root = Path(data.root) if data.root else (run_path / "data" if run_path else None)
        if root is None:
            raise ConfigError("data.root: a synthetic dataset needs a folder (--data-root DIR)")
        main_process_first(lambda: write_synthetic(root))
        return root, synthetic_format
    if not data.root:
        raise ConfigError(f"data.root: required for data.format {data.format!r} (pass --data-root DIR)")
    return Path(data.root), data.format


@contextlib.contextmanager
def undo_new_folder_on_error(out: str | os.PathLike) -> Iterator[None]:
    """Remove the output folder this invocation made when it fails before any progress: a run with bad data,
    a bad split or a model that cannot be built, an export that fails its checks. Nothing half-written stays.

    Files that were in the folder before are never touched, nor is a folder the user made, nor a run holding a
    finished model (``done.json``) or a resumable checkpoint (``last.pt``): those are worth keeping for ``--resume``.
    """
    out = Path(out)
    existed = out.exists()
    before = set(out.iterdir()) if existed and out.is_dir() else set()
    try:
        yield
    except BaseException:
        progress = RunDir(out).holds_progress()
        held_a_run = out / "config.yaml" in before
        if not progress and not held_a_run and out.is_dir() and is_main_process():
            # Only what this invocation made goes: a user's files and folder stay, even an empty folder.
            for child in set(out.iterdir()) - before:
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            release_run_folder(out)
            if not existed and not any(out.iterdir()):
                out.rmdir()
        elif out.is_dir() and is_main_process():
            release_run_folder(out)
        raise


def open_run(recipe, out: str | os.PathLike) -> RunDir:
    """Create or reopen the run folder; the recipe minus ``runtime`` must match a run already there."""
    comparable = {k: v for k, v in recipe.model_dump(mode="json").items() if k != "runtime"}
    # Under DDP rank 0 owns every file of the run; the other ranks only read what it wrote. Its failure is
    # every rank's: the others would otherwise wait for it in the next collective until the timeout.
    problem = None
    if is_main_process():
        try:
            run = RunDir.create(out, recipe, recipe.seed, comparable=comparable,
                                affects=getattr(type(recipe), "SECTION_MODELS", None))
        except KDError as exc:
            problem = exc
    problem = broadcast_object(problem)
    if problem is not None:
        raise problem
    check_shared_folder(Path(out))
    if not is_main_process():
        setup_logging(level="WARNING")
        return RunDir(out)
    setup_logging(logfile=run.path / "run.log")
    # run.log may be shared with a report: it names the run folder and the data root, never where they are.
    data_root = str(getattr(recipe.data, "root", None) or "")
    add_log_redaction(redact_paths({str(run.path): "<run>", data_root: "<data root>"}))
    set_progress(recipe.runtime.progress)
    if world_size() > 1:
        import torch.distributed as dist

        get_logger(__name__).info("DDP: world size %d, %s backend, rank 0 writes the run folder", world_size(),
                                  dist.get_backend())
    return run


def check_shared_folder(path: Path) -> None:
    """Under DDP, check that every rank sees the files rank 0 writes into ``path``.

    Rank 0 writes the run (checkpoints, teachers, folds.json, done markers) and the other ranks read from it, so
    a multi-node run needs the run folder on a filesystem all nodes share. Without one, ranks would decide from
    different views (resume or not, fold done or not) and hang; this stops them at the start instead.
    """
    if not is_distributed():
        return
    import secrets
    import socket

    token = broadcast_object(secrets.token_hex(8) if is_main_process() else None)
    probe = path / f".shared-folder-check-{token}"
    if is_main_process():
        probe.write_text(token, encoding="utf-8")
    barrier()
    try:
        seen = probe.read_text(encoding="utf-8") == token
    except OSError:
        seen = False
    views = all_gather_objects((rank(), socket.gethostname(), seen))
    if is_main_process():
        probe.unlink(missing_ok=True)
    blind = [f"rank {r} on {host}" for r, host, ok in views if not ok]
    if blind:
        raise KDError(f"{path}: {', '.join(blind)} cannot see the files rank 0 writes there; DDP needs the run "
                      "folder (--out) on a filesystem every node shares (NFS, Lustre, ...)")


def finish_run(run: RunDir, runner: Any, tool: str, build_report: Callable[..., Any] | None, n_boot: int,
               seed: int) -> None:
    """Write the report when every fold of every model is done; otherwise say which folds are left."""
    log = get_logger(tool)
    try:
        missing = runner.missing_folds()
        if missing:
            log.info("folds still to run: %s; run them (same recipe and --out), then `%s report %s`", missing, tool,
                     run.path)
        elif build_report is not None:
            build_report(run.path, n_boot=n_boot, seed=seed)
            log.info("report: %s", run.path / "report.html")
    finally:
        release_run_folder(run.path)


def manifest_for_run(run: RunDir, manifest: FoldManifest) -> FoldManifest:
    """Save ``manifest`` as the run's ``folds.json``, or check it equals the one saved before."""
    path = run.path / "folds.json"
    # Rank 0's view decides for all: a slower rank would otherwise see the file rank 0 has just written, skip
    # the barrier below and leave rank 0 waiting in it forever.
    if broadcast_object(path.exists()):
        stored = load_manifest(path)
        if stored.sha != manifest.sha:
            raise DataError(f"{path}: the data, the split settings or the id pseudonymisation key changed since this "
                            f"run started (manifest {stored.sha} vs {manifest.sha}); use a new --out")
        return stored
    if is_main_process():
        manifest.save(path)
    barrier()
    return manifest


def profile_models(run: RunDir, models: dict[str, Callable[[], nn.Module]], input_shape: tuple[int, ...],
                   latency_runs: int) -> dict:
    """Parameters, forward FLOPs and batch-1 CPU latency of each architecture -> ``model_profile.json``."""
    profile = {}
    for name, build in models.items():
        model = build().eval()
        latency = measure_latency(model, torch.zeros(1, *input_shape), warmup=2, runs=latency_runs)
        profile[name] = {"arch": getattr(model, "default_cfg", {}).get("architecture", type(model).__name__),
                         "params": count_parameters(model), "flops": count_flops(model, input_shape),
                         "input_size": list(input_shape), "latency_ms": latency, "device": "cpu",
                         "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    run.write_json("model_profile.json", profile)
    return profile
