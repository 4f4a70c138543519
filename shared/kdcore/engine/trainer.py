"""The one training engine of the package: every teacher, student and baseline is trained here.

It owns the loop mechanics (optimizer groups, warmup + cosine, frozen-backbone warm epochs, autocast,
accumulation, clipping, early stopping, best-epoch selection, SWA, checkpoints, resume); the model-specific
part (how a batch becomes a loss, how validation is scored) comes from a :class:`TrainTask`.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

from ..checkpoint import load_checkpoint, save_checkpoint, save_weights
from ..config import TrainConfig
from ..errors import CheckpointError, TrainingError
from ..logs import TensorBoardLogger, get_logger, progress
from ..seeding import derive_seed, rng_state, set_rng_state
from .distributed import broadcast_object, is_main_process, wrap_ddp
from .optim import build_optimizer, build_scheduler, set_backbone_trainable

__all__ = ["Trainer", "TrainTask", "FitResult", "move_to_device"]
log = get_logger(__name__)


class TrainTask(Protocol):
    """What a vertical supplies for one model: the loss of a batch and the validation score."""

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss of ``batch`` (already on the device) and extra numbers to log."""

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Inner-validation metrics of ``model`` (called in eval mode, without gradients)."""

    def inputs(self, batch: Any) -> torch.Tensor:
        """The model input of a batch (for SWA's BatchNorm update)."""


@dataclass
class FitResult:
    model: nn.Module
    kept: Literal["swa", "best", "last"]
    best_epoch: int | None
    best_score: float | None
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)


def move_to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.ndim == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, dict):
        return {k: move_to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device, channels_last) for v in batch)
    return batch


class Trainer:
    """Train one model on one fold.

    Args:
        model: the model to train (moved to ``device``).
        config: the recipe's training section.
        task: loss and validation for this model.
        monitor: validation key that selects the best epoch and drives early stopping.
        mode: ``"min"`` or ``"max"`` for ``monitor``.
        device: where to train.
        amp_dtype: autocast dtype (None = full precision); float16 enables a GradScaler.
        seed: run seed; per-epoch randomness is derived from (seed, name, fold, epoch).
        name, fold: identify the model in logs and checkpoints.
        output_dir: where ``last.pt`` (resumable) and the final ``model.safetensors`` go.
        meta: metadata stored beside the final weights (architecture, fold, manifest hash, ...).
        run: the RunDir whose log streams receive per-epoch records.
        channels_last: NHWC memory format (faster convolutions on recent GPUs and CPUs).
        compile_model: wrap the training forward in ``torch.compile``.
        on_epoch: called with each epoch's record (train and ``val_*`` numbers) after it is logged; a sweep
            reports the validation score to its pruner here, which may stop the fit by raising.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, task: TrainTask, *, monitor: str,
                 mode: Literal["min", "max"], device: torch.device, amp_dtype: torch.dtype | None = None,
                 seed: int = 0, name: str = "model", fold: int | None = None, output_dir: str | os.PathLike | None = None,
                 meta: dict[str, Any] | None = None, run: Any = None, tensorboard: TensorBoardLogger | None = None,
                 channels_last: bool = False, compile_model: bool = False,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None):
        self.config, self.task, self.monitor, self.mode = config, task, monitor, mode
        self.device, self.amp_dtype, self.seed, self.name, self.fold = device, amp_dtype, seed, name, fold
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.meta = dict(meta or {})
        self.run, self.tensorboard, self.channels_last = run, tensorboard, channels_last
        self.compile_model = compile_model
        self.on_epoch = on_epoch
        self.model = model.to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, config)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.swa_model: AveragedModel | None = None
        self.swa_scheduler: SWALR | None = None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None

    # ------------------------------------------------------------------ public

    @property
    def checkpoint_path(self) -> Path | None:
        return self.output_dir / "last.pt" if self.output_dir is not None else None

    def discard_checkpoint(self) -> None:
        """Remove the resumable state once the final weights are written (rank 0 owns it under DDP)."""
        if self.checkpoint_path is not None and is_main_process():
            self.checkpoint_path.unlink(missing_ok=True)

    def fit(self, train_loader: torch.utils.data.DataLoader, resume: bool = True) -> FitResult:
        cfg = self.config
        steps_per_epoch = math.ceil(len(train_loader) / cfg.accumulate)
        swa_start = cfg.swa.start_epoch if cfg.swa.enabled else None
        planned_epochs = cfg.epochs
        self.scheduler = build_scheduler(self.optimizer, cfg, steps_per_epoch, swa_start or cfg.epochs)
        if cfg.swa.enabled:
            self.swa_model = AveragedModel(self.model)
        train_model = wrap_ddp(self.model, self.device, find_unused=cfg.freeze_backbone_epochs > 0)
        if self.compile_model:
            # Only the training forward is compiled; evaluation and SWA use the plain module (same weights).
            train_model = torch.compile(train_model)

        state = {"epoch": -1, "best_score": None, "best_epoch": None, "best_state": None, "bad_epochs": 0,
                 "history": [], "swa_start": swa_start, "planned_epochs": planned_epochs, "stopped_early": False}
        if resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
            state = self._restore(state)
            log.info("%s fold %s: resumed after epoch %d", self.name, self.fold, state["epoch"])

        epoch = state["epoch"] + 1
        while epoch < state["planned_epochs"]:
            in_swa = state["swa_start"] is not None and epoch >= state["swa_start"]
            if in_swa and self.swa_scheduler is None:
                self.swa_scheduler = self._make_swalr()
            record = self._train_epoch(train_model, train_loader, epoch, in_swa)
            if in_swa:
                self.swa_model.update_parameters(self.model)
                self.swa_scheduler.step()
            record.update(self._validate(self.model))
            self._track_best(state, record, epoch)
            state["history"].append(record)
            self._log(record)
            if self.on_epoch is not None:
                self.on_epoch(record)
            self._early_stopping(state, epoch, in_swa)
            state["epoch"] = epoch
            self._save_checkpoint(state)
            if state["stopped_early"]:
                break
            epoch += 1
        return self._finish(state, train_loader)

    # ------------------------------------------------------------------ loop parts

    def _train_epoch(self, train_model: nn.Module, loader, epoch: int, in_swa: bool) -> dict[str, Any]:
        cfg = self.config
        torch.manual_seed(derive_seed(self.seed, self.name, self.fold, "epoch", epoch))
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        set_backbone_trainable(self.optimizer, epoch >= cfg.freeze_backbone_epochs)
        train_model.train()
        started = time.perf_counter()
        total_loss, batches, extras = 0.0, 0, {}
        n_batches = len(loader)
        self.optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(progress(loader, desc=f"{self.name} f{self.fold} e{epoch}", total=n_batches)):
            batch = move_to_device(batch, self.device, self.channels_last)
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                loss, logs = self.task.loss(train_model, batch)
            if not torch.isfinite(loss.detach()).all():
                raise TrainingError(f"{self.name} fold {self.fold}: non-finite loss ({loss.item()}) at epoch {epoch}, "
                                    f"step {step}; lower the learning rate or check the inputs of this batch")
            self.scaler.scale(loss / cfg.accumulate).backward()
            if (step + 1) % cfg.accumulate == 0 or step + 1 == n_batches:
                self._optimizer_step()
                if not in_swa:
                    self.scheduler.step()
            total_loss += float(loss.detach())
            batches += 1
            for key, value in logs.items():
                extras[key] = extras.get(key, 0.0) + float(value)
        record = {"model": self.name, "fold": self.fold, "epoch": epoch, "split": "train",
                  "loss": total_loss / max(1, batches), "lr": self.optimizer.param_groups[0]["lr"],
                  "seconds": round(time.perf_counter() - started, 3), "swa": in_swa}
        record.update({k: v / max(1, batches) for k, v in extras.items()})
        return record

    def _optimizer_step(self) -> None:
        if self.config.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.config.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def _validate(self, model: nn.Module) -> dict[str, float]:
        # Under DDP rank 0 validates and every rank takes its numbers: best-epoch and early-stopping decisions
        # made from each rank's own (on GPUs not bit-identical) scores could part the ranks and hang them.
        record = None
        if is_main_process():
            model.eval()
            with torch.no_grad():
                metrics = self.task.validate(model)
            if self.monitor not in metrics:
                raise KeyError(f"validation returned {sorted(metrics)}, no monitored key {self.monitor!r}")
            record = {f"val_{k}" if not k.startswith("val_") else k: float(v) for k, v in metrics.items()}
        return broadcast_object(record)

    def _score(self, record: dict[str, Any]) -> float:
        key = self.monitor if self.monitor.startswith("val_") else f"val_{self.monitor}"
        return record[key]

    def _better(self, score: float, best: float | None) -> bool:
        if math.isnan(score):
            return False
        if best is None:
            return True
        return score < best if self.mode == "min" else score > best

    def _track_best(self, state: dict, record: dict, epoch: int) -> None:
        score = self._score(record)
        if self._better(score, state["best_score"]):
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0,
                         best_state={k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()})
        else:
            state["bad_epochs"] += 1

    def _early_stopping(self, state: dict, epoch: int, in_swa: bool) -> None:
        patience = self.config.patience
        if patience is None or state["bad_epochs"] < patience or in_swa:
            return
        if state["swa_start"] is None:
            state["stopped_early"] = True
            log.info("%s fold %s: early stop after epoch %d (best %s at epoch %s)", self.name, self.fold, epoch,
                     state["best_score"], state["best_epoch"])
            return
        # With SWA the average is the model kept: a plateau before the SWA phase starts that phase now,
        # with its planned length, instead of ending the run with nothing averaged.
        swa_length = state["planned_epochs"] - state["swa_start"]
        state["swa_start"] = epoch + 1
        state["planned_epochs"] = epoch + 1 + swa_length
        state["stopped_early"] = False
        state["bad_epochs"] = 0
        log.info("%s fold %s: plateau at epoch %d, SWA phase starts now for %d epochs", self.name, self.fold,
                 epoch, swa_length)

    def _make_swalr(self) -> SWALR:
        swa = self.config.swa
        swa_lr = swa.lr if swa.lr is not None else [g["lr"] for g in self.optimizer.param_groups]
        return SWALR(self.optimizer, swa_lr=swa_lr, anneal_epochs=swa.anneal_epochs,
                     anneal_strategy=swa.anneal_strategy)

    # ------------------------------------------------------------------ finish, log, checkpoint

    def _finish(self, state: dict, train_loader) -> FitResult:
        if self.swa_model is not None and state["swa_start"] is not None and self.swa_model.n_averaged.item() > 0:
            loader_seed = derive_seed(self.seed, self.name, self.fold, "update_bn")
            torch.manual_seed(loader_seed)
            inputs = (move_to_device(self.task.inputs(b), self.device, self.channels_last) for b in train_loader)
            update_bn(inputs, self.swa_model)
            final, kept = self.swa_model.module, "swa"
        elif state["best_state"] is not None:
            self.model.load_state_dict(state["best_state"])
            final, kept = self.model, "best"
        else:
            final, kept = self.model, "last"
        final.eval()
        result = FitResult(model=final, kept=kept, best_epoch=state["best_epoch"], best_score=state["best_score"],
                           epochs_run=state["epoch"] + 1, stopped_early=state["stopped_early"],
                           history=state["history"])
        if kept == "swa":
            result.history.append({"model": self.name, "fold": self.fold, "epoch": state["epoch"], "split": "swa",
                                   **self._validate(final), "n_averaged": int(self.swa_model.n_averaged.item())})
            self._log(result.history[-1])
        if self.output_dir is not None and is_main_process():
            meta = {**self.meta, "kept": kept, "best_epoch": state["best_epoch"], "best_score": state["best_score"],
                    "epochs_run": result.epochs_run, "monitor": self.monitor, "mode": self.mode}
            save_weights(self.output_dir / "model.safetensors", final.state_dict(), meta)
        return result

    def _log(self, record: dict[str, Any]) -> None:
        if self.run is not None and is_main_process():
            self.run.log_event(record)
        if self.tensorboard is not None:
            values = {k: v for k, v in record.items() if k not in ("model", "fold", "epoch", "split")}
            self.tensorboard.scalars(f"{self.name}/fold{self.fold}", values, record["epoch"])
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()
                 if k not in ("model", "fold", "split")}
        log.info("%s fold %s %s", self.name, self.fold, shown)

    def _checkpoint_meta(self) -> dict[str, Any]:
        return {"name": self.name, "fold": self.fold, "config": self.config.model_dump(mode="json"),
                **{k: v for k, v in self.meta.items() if isinstance(v, (str, int, float, bool, type(None)))}}

    def _save_checkpoint(self, state: dict) -> None:
        if self.checkpoint_path is None or not is_main_process():
            return
        payload = {
            "meta": self._checkpoint_meta(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "swa_model": self.swa_model.state_dict() if self.swa_model is not None else None,
            "swa_scheduler": self.swa_scheduler.state_dict() if self.swa_scheduler is not None else None,
            "rng": rng_state(),
            "state": state,
        }
        save_checkpoint(self.checkpoint_path, payload)

    def _restore(self, state: dict) -> dict:
        payload = load_checkpoint(self.checkpoint_path)
        expected = self._checkpoint_meta()
        if payload.get("meta") != expected:
            raise CheckpointError(f"{self.checkpoint_path}: was written for another model, fold or training "
                                  "configuration; remove it or choose another --out")
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        if payload["swa_model"] is not None and self.swa_model is not None:
            self.swa_model.load_state_dict(payload["swa_model"])
        if payload["swa_scheduler"] is not None:
            self.swa_scheduler = self._make_swalr()
            self.swa_scheduler.load_state_dict(payload["swa_scheduler"])
        set_rng_state(payload["rng"])
        return payload["state"]
