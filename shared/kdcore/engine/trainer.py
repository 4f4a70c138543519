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
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

from ..checkpoint import load_checkpoint, save_checkpoint, save_weights
from ..config import TrainConfig
from ..errors import CheckpointError, TrainingError
from ..logs import TensorBoardLogger, get_logger, progress
from ..seeding import derive_seed, rng_state, set_rng_state
from .distributed import broadcast_object, gather_batch, is_distributed, is_main_process, wrap_ddp
from .optim import build_optimizer, build_scheduler, set_backbone_trainable

__all__ = ["Trainer", "TrainTask", "FitResult", "move_to_device"]
log = get_logger(__name__)

# An fp16 step with a non-finite loss is skipped (the loss scale cannot fix it, unlike an overflowing gradient);
# this many in a row means the run itself has diverged.
MAX_NON_FINITE_STEPS_IN_A_ROW = 5


class TrainTask(Protocol):
    """What a vertical supplies for one model: the loss of a batch and the validation score."""

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """Scalar loss of ``batch`` (already on the device) and extra numbers to log.

        Return the extras as detached tensors: the engine sums them on the device and reads them once per
        epoch; ``float(tensor)`` here would wait for the GPU at every micro-batch.
        """

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Inner-validation metrics of ``model`` (called in eval mode, without gradients)."""

    def inputs(self, batch: Any) -> torch.Tensor:
        """The model input of a batch (for SWA's BatchNorm update)."""

    # Optional: ``auxiliary``, an nn.Module of training-only parameters (a feature loss's projector, USKD's weak
    # classifier): trained by the same optimizer at the head's learning rate and kept in last.pt, never in the
    # model's weights (model.safetensors), so export drops it.


@dataclass
class FitResult:
    model: nn.Module
    kept: Literal["swa", "best", "last"]
    best_epoch: int | None
    best_score: float | None
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what changed the planned course (a plateau before SWA)


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
        sync_batchnorm: under DDP, BatchNorm layers normalise over the global batch (``SyncBatchNorm``, GPUs only)
            instead of each rank's share of it.
        on_epoch: called with each epoch's record (train and ``val_*`` numbers) after it is logged; a sweep
            reports the validation score to its pruner here, which may stop the fit by raising.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, task: TrainTask, *, monitor: str,
                 mode: Literal["min", "max"], device: torch.device, amp_dtype: torch.dtype | None = None,
                 seed: int = 0, name: str = "model", fold: int | None = None, output_dir: str | os.PathLike | None = None,
                 meta: dict[str, Any] | None = None, run: Any = None, tensorboard: TensorBoardLogger | None = None,
                 channels_last: bool = False, compile_model: bool = False, sync_batchnorm: bool = False,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None):
        self.config, self.task, self.monitor, self.mode = config, task, monitor, mode
        self.device, self.amp_dtype, self.seed, self.name, self.fold = device, amp_dtype, seed, name, fold
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.meta = dict(meta or {})
        self.run, self.tensorboard, self.channels_last = run, tensorboard, channels_last
        self.compile_model = compile_model
        if sync_batchnorm and is_distributed():
            # Same parameter objects, so the state dict keeps its keys; convert before the optimizer sees them.
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.on_epoch = on_epoch
        self.model = model.to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, config)
        self.auxiliary: nn.Module | None = getattr(task, "auxiliary", None)
        if self.auxiliary is not None:
            self.auxiliary.to(device)
            aux_params = [p for p in self.auxiliary.parameters() if p.requires_grad]
            if aux_params:  # added before fit() builds the schedule, so it is warmed up and decayed like the head
                self.optimizer.add_param_group({"name": "auxiliary", "params": aux_params, "lr": config.lr,
                                                "weight_decay": config.weight_decay})
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.swa_model: AveragedModel | None = None
        self.swa_scheduler: SWALR | None = None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self.train_model: nn.Module | None = None  # the (DDP-wrapped, compiled) module of the current epoch
        self._wrapped_trainable: bool | None = None
        self._last_scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self._non_finite_in_a_row = 0

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

        state = {"epoch": -1, "best_score": None, "best_epoch": None, "best_state": None, "bad_epochs": 0,
                 "history": [], "swa_start": swa_start, "planned_epochs": planned_epochs, "stopped_early": False}
        # Rank 0's view decides: ranks that each looked at the folder could disagree (one resumes, one starts
        # over) and hang in the first collective. Every rank then reads the file (a shared run folder is checked
        # when the run opens).
        if resume and self.checkpoint_path is not None and broadcast_object(self.checkpoint_path.exists()):
            state = self._restore(state)
            log.info("%s fold %s: resumed after epoch %d", self.name, self.fold, state["epoch"])

        epoch = state["epoch"] + 1
        while epoch < state["planned_epochs"]:
            in_swa = state["swa_start"] is not None and epoch >= state["swa_start"]
            if in_swa and self.swa_scheduler is None:
                self.swa_scheduler = self._make_swalr()
            train_model = self._training_module(epoch >= cfg.freeze_backbone_epochs)
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

    def _training_module(self, backbone_trainable: bool) -> nn.Module:
        """The module the epoch trains: DDP-wrapped (and compiled) for the current trainable parameters.

        DDP registers the parameters that require gradients when it is built, so the wrapper is rebuilt when the
        frozen-backbone epochs end: frozen epochs then need no ``find_unused_parameters`` (nor its extra pass
        over the graph each step), and it is not left on for the rest of training.
        """
        set_backbone_trainable(self.optimizer, backbone_trainable)
        if self.train_model is None or self._wrapped_trainable != backbone_trainable:
            self.train_model = None  # drop the old wrapper (and its autograd hooks) before building the new one
            train_model = wrap_ddp(self.model, self.device)
            if self.compile_model:
                # Only the training forward is compiled; evaluation and SWA use the plain module (same weights).
                train_model = torch.compile(train_model)
            self.train_model, self._wrapped_trainable = train_model, backbone_trainable
        return self.train_model

    def _train_epoch(self, train_model: nn.Module, loader, epoch: int, in_swa: bool) -> dict[str, Any]:
        cfg = self.config
        torch.manual_seed(derive_seed(self.seed, self.name, self.fold, "epoch", epoch))
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        if hasattr(self.task, "set_epoch"):  # e.g. a distillation weight ramped over the first epochs
            self.task.set_epoch(epoch)
        train_model.train()
        if self.auxiliary is not None:
            self.auxiliary.train()
        started = time.perf_counter()
        # Running sums stay on the device and are read once, at the end of the epoch: a float() per micro-batch
        # would make the host wait for the GPU at every step.
        loss_sum = torch.zeros((), device=self.device)
        finite_batches = torch.zeros((), device=self.device)
        extras: dict[str, Any] = {}
        group_finite: torch.Tensor | None = None
        skipped = 0
        n_batches = len(loader)
        self.optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(progress(loader, desc=f"{self.name} f{self.fold} e{epoch}", total=n_batches)):
            batch = move_to_device(batch, self.device, self.channels_last)
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                loss, logs = self.task.loss(train_model, batch)
            value = loss.detach().float()
            finite = torch.isfinite(value)
            group_finite = finite if group_finite is None else group_finite & finite
            group_start = step - step % cfg.accumulate
            # The last group of an epoch may hold fewer micro-batches: it averages over those it has.
            group_size = min(cfg.accumulate, n_batches - group_start)
            self.scaler.scale(loss / group_size).backward()
            loss_sum = loss_sum + torch.where(finite, value, torch.zeros_like(value))
            finite_batches = finite_batches + finite
            for key, extra in logs.items():
                extras[key] = extras.get(key, 0.0) + (extra.detach().float() if torch.is_tensor(extra) else extra)
            if step + 1 == group_start + group_size:
                if self._optimizer_step(group_finite, epoch, group_start, step):
                    if not in_swa and cfg.schedule_per == "step":
                        # Only a step the optimizer took advances the schedule: skipped fp16 steps must not
                        # shorten the warm-up.
                        self.scheduler.step()
                else:
                    skipped += 1
                group_finite = None
        lr = self.optimizer.param_groups[0]["lr"]
        if not in_swa and cfg.schedule_per == "epoch":
            self.scheduler.step()
        keys = list(extras)
        device_values = [loss_sum, finite_batches] + [extras[k] for k in keys if torch.is_tensor(extras[k])]
        read = iter(torch.stack([v.to(self.device).float() for v in device_values]).tolist())  # the one read
        total_loss, batches = next(read), next(read)
        means = {k: (next(read) if torch.is_tensor(extras[k]) else extras[k]) / max(1, n_batches) for k in keys}
        record = {"model": self.name, "fold": self.fold, "epoch": epoch, "split": "train",
                  "loss": total_loss / max(1.0, batches), "lr": lr,
                  "seconds": round(time.perf_counter() - started, 3), "swa": in_swa}
        if self.scaler.is_enabled():
            record["skipped_steps"] = skipped
        record.update(means)
        return record

    def _optimizer_step(self, group_finite: torch.Tensor, epoch: int, first: int, last: int) -> bool:
        """Clip, step and zero the gradients; False when the step was skipped (fp16 overflow or non-finite loss)."""
        where = f"epoch {epoch}, step {first}" if first == last else f"epoch {epoch}, steps {first}-{last}"
        if is_distributed():
            # One rank's non-finite loss is every rank's (its gradients were averaged into theirs): all skip or
            # stop together, instead of one stopping while the others wait for it.
            group_finite = group_finite.to(torch.int32)
            dist.all_reduce(group_finite, op=dist.ReduceOp.MIN)
        if not bool(group_finite):  # the one host read per optimizer step
            self.optimizer.zero_grad(set_to_none=True)
            if not self.scaler.is_enabled():
                raise TrainingError(f"{self.name} fold {self.fold}: non-finite loss at {where}; lower the learning "
                                    "rate or check the inputs of this batch")
            self._non_finite_in_a_row += 1
            log.warning("%s fold %s: non-finite fp16 loss at %s, step skipped (%d in a row)", self.name, self.fold,
                        where, self._non_finite_in_a_row)
            if self._non_finite_in_a_row >= MAX_NON_FINITE_STEPS_IN_A_ROW:
                raise TrainingError(f"{self.name} fold {self.fold}: non-finite fp16 loss in "
                                    f"{self._non_finite_in_a_row} optimizer steps in a row (last at {where}); "
                                    "lower the learning rate, train in bfloat16 or float32, or check the inputs")
            return False
        self._non_finite_in_a_row = 0
        if self.auxiliary is not None and is_distributed():
            # DDP averages the model's gradients only; the auxiliary parameters are averaged here, so every rank
            # takes the same step.
            for param in self.auxiliary.parameters():
                if param.grad is not None:
                    dist.all_reduce(param.grad)
                    param.grad.div_(dist.get_world_size())
        if self.config.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.config.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if not self.scaler.is_enabled():
            return True
        # GradScaler lowers the scale exactly when it found inf/NaN gradients and skipped optimizer.step().
        scale = self.scaler.get_scale()
        stepped = scale >= self._last_scale
        self._last_scale = scale
        return stepped

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
        on_plateau = self.config.swa.on_plateau
        if patience is None or state["bad_epochs"] < patience or (in_swa and on_plateau == "start_swa"):
            return
        if state["swa_start"] is None or on_plateau == "stop" or in_swa:
            state["stopped_early"] = True
            if state["swa_start"] is not None and not in_swa:
                self._note(state, epoch, "plateau_before_swa",
                           f"{self.name} fold {self.fold}: no improvement for {patience} epochs, training stopped at "
                           f"epoch {epoch} before the SWA phase (planned from epoch {state['swa_start']}); "
                           f"nothing was averaged, the best epoch ({state['best_epoch']}) is kept")
            else:
                log.info("%s fold %s: early stop after epoch %d (best %s at epoch %s)", self.name, self.fold, epoch,
                         state["best_score"], state["best_epoch"])
            return
        # With SWA the average is the model kept: a plateau before the SWA phase starts that phase now,
        # with its planned length, instead of ending the run with nothing averaged.
        swa_length = state["planned_epochs"] - state["swa_start"]
        self._note(state, epoch, "plateau_before_swa",
                   f"{self.name} fold {self.fold}: no improvement for {patience} epochs, so the SWA phase planned "
                   f"from epoch {state['swa_start']} started early, at epoch {epoch + 1}, for {swa_length} epochs")
        state["swa_start"] = epoch + 1
        state["planned_epochs"] = epoch + 1 + swa_length
        state["stopped_early"] = False
        state["bad_epochs"] = 0

    def _note(self, state: dict, epoch: int, event: str, message: str) -> None:
        """A change of the planned course: logged, kept in the fit result and in log.jsonl for the report."""
        log.warning("%s", message)
        state.setdefault("notes", []).append(message)
        if self.run is not None and is_main_process():
            self.run.log_event({"model": self.name, "fold": self.fold, "split": "event", "event": event,
                                "at_epoch": epoch, "message": message})

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
            # Under DDP every rank forwards the global batch (its shard's batch gathered from all ranks): the
            # BatchNorm statistics are then those one process computes from the whole training set, not rank 0's
            # 1/N of it, and identical on every rank.
            inputs = (gather_batch(move_to_device(self.task.inputs(b), self.device, self.channels_last))
                      for b in train_loader)
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
                           history=state["history"], notes=list(state.get("notes", [])))
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
        if self.tensorboard is not None and is_main_process():
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
            "scaler": self.scaler.state_dict(),  # empty when the scaler is disabled (no fp16)
            "amp_dtype": str(self.amp_dtype),
            "swa_model": self.swa_model.state_dict() if self.swa_model is not None else None,
            "swa_scheduler": self.swa_scheduler.state_dict() if self.swa_scheduler is not None else None,
            "rng": rng_state(),
            "state": state,
        }
        if self.auxiliary is not None:
            payload["auxiliary"] = self.auxiliary.state_dict()
        save_checkpoint(self.checkpoint_path, payload)

    def _restore(self, state: dict) -> dict:
        payload = load_checkpoint(self.checkpoint_path)
        expected = self._checkpoint_meta()
        if payload.get("meta") != expected:
            raise CheckpointError(f"{self.checkpoint_path}: was written for another model, fold or training "
                                  "configuration; remove it or choose another --out")
        self.model.load_state_dict(payload["model"])
        if self.auxiliary is not None and payload.get("auxiliary") is not None:
            self.auxiliary.load_state_dict(payload["auxiliary"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self._restore_scaler(payload)
        if payload["swa_model"] is not None and self.swa_model is not None:
            self.swa_model.load_state_dict(payload["swa_model"])
        if payload["swa_scheduler"] is not None:
            self.swa_scheduler = self._make_swalr()
            self.swa_scheduler.load_state_dict(payload["swa_scheduler"])
        set_rng_state(payload["rng"])
        return payload["state"]

    def _restore_scaler(self, payload: dict) -> None:
        """Load the fp16 loss scale only where there is one to load, and say what a change of precision means."""
        saved_dtype, current = payload.get("amp_dtype", "unknown"), str(self.amp_dtype)
        if saved_dtype != current:
            log.warning("%s fold %s: checkpoint was trained with autocast %s, resuming with %s: training continues "
                        "from the saved weights and optimizer, but the rest of the run is not the one an "
                        "uninterrupted %s run would give%s", self.name, self.fold, saved_dtype, current, saved_dtype,
                        "; the fp16 loss scale starts afresh" if self.scaler.is_enabled() else "")
        if self.scaler.is_enabled() and payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
            self._last_scale = self.scaler.get_scale()
