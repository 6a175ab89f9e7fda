"""The training loop: one process, or one DDP replica per process under torchrun.

A :class:`Trainer` is built in named steps (processes and device, data, components, batches)
from a :class:`RunConfig` that planning produced, and :meth:`Trainer.run` writes the run folder.
The loop is lean: batches come from uint8 tensors held on the GPU or in RAM when the cache fits
(else a DataLoader over the HDF5 cache), loss terms accumulate on the device, and the host
synchronises only every ``log_every`` steps. It is seeded and, on the CPU, deterministic: a run
stopped at a checkpoint and resumed ends with the same weights as one that never stopped.

SIGINT and SIGTERM are caught: the loop finishes the current step, writes a checkpoint and
raises :class:`TrainingInterrupted` (exit code 130 or 143). A new run writes a checkpoint before
its first step, so there is always one to resume from: a non-finite loss stops the run without
overwriting the last finite checkpoint, and the message names it and the ``--resume`` line
that continues from it with a lower learning rate. A write that fails (a full disk) stops the
run with the last complete checkpoint intact.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from genkit.components.build import build_components
from genkit.components.limits import derived_seed
from genkit.config import RunConfig, TrainSpec
from genkit.data.batches import Batches, choose_placement
from genkit.data.holdout import without_held_out
from genkit.data.prepare import prepare_dataset
from genkit.errors import GenkitRuntimeError, UsageError
from genkit.runtime import distributed
from genkit.sampling.attributes import AttributeTable
from genkit.sampling.run import Run
from genkit.store.files import WriteError, check_output_dir, reporting_write_errors, write_text_atomic
from genkit.store.images import plot_curves
from genkit.store.run_folder import (CONFIG_FILE, LOSS_CURVE_FILE, LOSS_WEIGHTS_FILE, METRICS_FILE, STEPS_FILE,
                                     WEIGHTS_FILE, default_run_dir, read_jsonl)
from genkit.store.weights import loss_has_state, loss_parameters, save_weights
from genkit.training.averaging import WeightAverage
from genkit.training.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint, write_failed
from genkit.training.epoch_grids import GRID_COLS, EpochGrids
from genkit.training.loop import (LoopState, Observer, Observers, Window, autocast, compile_model, effective_precision,
                                  evaluate_loss, make_optimizer, notify)
from genkit.training.signals import TrainingInterrupted, stop_on_signals
from genkit.training.tensorboard import TensorBoardLog, wanted as tensorboard_wanted
from genkit.training.timing import DataWaitClock
from genkit_datasets.cache import Progress
from genkit_datasets.torch_dataset import CachedImageDataset

__all__ = ["Trainer", "TrainingInterrupted", "train"]



class Trainer:
    """Trains one run folder; ``resume=True`` continues from its latest checkpoint."""

    def __init__(self, config: RunConfig, out_dir: Path | None, observer: Observer | None = None,
                 cache_dir: str | Path | None = None, data_progress: Progress | None = None, resume: bool = False,
                 tensorboard: bool | None = None):
        self.config, self.observer = config, observer
        self._tensorboard = tensorboard_wanted(tensorboard)  # asked for and missing: refused before any work
        self._tensorboard_log: TensorBoardLog | None = None
        self.out = Path(out_dir) if out_dir is not None else default_run_dir(config.model.name, config.data.name)
        self._start_processes(resume)
        self._open_data(cache_dir, data_progress, resume)
        self._build_components()
        self._plan_batches()
        self.state = LoopState()
        self._epoch_seconds, self._epoch_images = 0.0, 0
        if resume:
            self._restore()

    # -- building, step by step ----------------------------------------------------------------
    def _start_processes(self, resume: bool) -> None:
        """The run folder is usable, the process group is up, the device chosen, the batch splits."""
        spec = self.config.train
        self.world = distributed.world_from_env()
        if not resume and self.world.is_main:
            check_output_dir(self.out)  # a file, a path under a file, a read-only disk: refused before any work
            if (self.out / CONFIG_FILE).exists():
                raise UsageError(f"{self.out} already holds a run; choose another --out, or continue it with --resume")
        self.device = distributed.init(self.world, distributed.resolve_device(spec.device))
        if spec.batch_size % self.world.size:
            raise UsageError(f"--batch-size {spec.batch_size} is the global batch and must divide evenly over "
                             f"{self.world.size} processes")

    def _open_data(self, cache_dir, data_progress, resume: bool) -> None:
        """The cache (built by each node's main process, the others wait), the train and validation splits."""
        data = self.config.data
        if self.world.local_rank == 0:
            info, _ = prepare_dataset(data.name, root=data.root, image_size=data.image_size, cache_dir=cache_dir,
                                      progress=data_progress, options=data.options)
        distributed.barrier(self.world)
        if self.world.local_rank != 0:
            info, _ = prepare_dataset(data.name, root=data.root, image_size=data.image_size, cache_dir=cache_dir,
                                      options=data.options)
        if info.rebuilt_because:
            notify(self.observer, "on_message", f"the cache {info.path} was rebuilt: {info.rebuilt_because}")
        if list(info.attribute_names) != list(data.attribute_names):
            raise UsageError(f"the {data.name} data now has {len(info.attribute_names)} attributes, not the "
                             f"{len(data.attribute_names)} this run was planned with; start a new run")
        if resume and data.cache_fingerprint not in (None, info.fingerprint):
            notify(self.observer, "on_message", "warning: the dataset changed since this run started (new fingerprint)")
        # held-out attribute combinations (genkit.data.holdout) never reach the model, nor the run's attribute table
        self.train_set = without_held_out(CachedImageDataset(info.path, "train", limit=data.limit), data)
        valid_split = "valid" if info.split_sizes.get("valid") else "test"  # a valid split is optional
        self.valid_set = CachedImageDataset(info.path, valid_split, limit=data.limit, in_memory=True)

    def _build_components(self) -> None:
        """Conditioner, model and loss on the device, the optimizer, and the model a step runs (DDP, compiled)."""
        spec = self.config.train
        torch.manual_seed(spec.seed)
        self.conditioner, self.model, self.loss_fn = build_components(self.config)
        self.model.to(self.device)
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        # A loss may be a torch.nn.Module owning parameters (a learned decoder σ): it lives on the
        # device, trains with the model's weights and is saved and restored with them.
        if isinstance(self.loss_fn, torch.nn.Module):
            self.loss_fn.to(self.device)
        self.loss_params = loss_parameters(self.loss_fn)
        self.precision = effective_precision(spec.precision, self.device, self.observer)
        self.optimizer = make_optimizer(self.model, spec.lr, extra=self.loss_params)
        # --ema: an averaged copy of the weights; it is what the grids, validation and the run folder use
        self.average = WeightAverage(self.model, spec.ema) if spec.ema else None
        self.sampling_model = self.average.model if self.average is not None else self.model
        self.step_model = self.model
        if self.world.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self._eager_model = self.step_model
        self._compile_untested = spec.compile
        if spec.compile:
            self.step_model = compile_model(self.step_model, self.observer)

    def _plan_batches(self) -> None:
        """Where the images live (GPU, RAM or disk, and why) and this process's batches."""
        spec = self.config.train
        self.placement, self.placement_reason = choose_placement(spec.data_in, self.train_set, self.device)
        self.batches = Batches(self.train_set, spec.batch_size // self.world.size, spec.seed, self.device,
                               self.placement, rank=self.world.rank, world_size=self.world.size, workers=spec.workers)
        self.data_wait = DataWaitClock(self.device)  # reported per logged window as data_wait_s

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> Run:
        try:
            return self._run()
        except WriteError as exc:
            raise write_failed(self.out, exc) from None
        finally:
            if self._tensorboard_log is not None:  # finished, interrupted or failed: its events are flushed
                self._tensorboard_log.close()

    def _run(self) -> Run:
        if self.world.is_main:
            with reporting_write_errors(self.out):
                self.out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.out / CONFIG_FILE, self.config.to_json())
            AttributeTable.from_rows(self.config.data.attribute_names, self.train_set.attributes).save(self.out)
            data = self.config.data
            notify(self.observer, "on_message",
                    f"training {self.config.model.name} on {data.name}: {len(self.train_set)} images "
                    f"{data.image_size[0]}x{data.image_size[1]}, data in {self.placement_reason}, device {self.device}"
                    + (f", {self.world.size} processes" if self.world.distributed else ""))
            if self._tensorboard:
                self._open_tensorboard()
        self.grids = EpochGrids(self.sampling_model, self.valid_set.attributes, self.config, self.device, self.out,
                                self.world.is_main)
        self.state.grid_cols = self.grids.plan(self.state.step, self.state.grid_cols,
                                               lambda text: notify(self.observer, "on_message", text))
        self.model.train()
        if self.state.step == 0:  # a checkpoint before the first step: a diverging run always has a finite state
            self._checkpoint()  # (decided from the step, not the folder, so every DDP replica agrees)
        with stop_on_signals() as stop:
            while self.state.epoch <= self.config.train.epochs:
                self._train_epoch(stop)
                self._finish_epoch()
        distributed.shutdown(self.world)
        self.model.eval()
        return Run(self.out, self.config, self.sampling_model, self.conditioner, self.loss_fn, self.device)

    def _train_epoch(self, stop: dict) -> None:
        """One pass over this process's share of the training split; one step reads top to bottom."""
        spec, state = self.config.train, self.state
        steps = len(self.batches)
        notify(self.observer, "on_epoch_start", state.epoch, spec.epochs, steps)
        window = Window(self.device, state.step)
        started, seen_before = time.perf_counter(), state.seen
        for images_u8, cond in self.data_wait.timed(self.batches.epoch(state.epoch, skip=state.batch_in_epoch)):
            images = images_u8.float().div_(255)
            if self.device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            # forward, backward, update: no host sync
            result = self._forward_loss(images, cond)
            self.optimizer.zero_grad(set_to_none=True)
            result.total.backward()
            self._average_loss_gradients()
            self.optimizer.step()
            if self.average is not None:
                self.average.update(self.model)
            state.step += 1
            state.batch_in_epoch += 1
            window.add(result, images.shape[0])
            # every --log-every steps and at the epoch's end: the host syncs, checks for NaN/inf, logs
            last = state.batch_in_epoch == steps
            signum = None if self.world.distributed else stop["signum"]
            if state.batch_in_epoch % spec.log_every == 0 or last or signum is not None:
                self._log_window(window)
                window = Window(self.device, state.step)
                signum = self._agreed_signal(stop)
            else:
                notify(self.observer, "on_step", state.epoch, state.batch_in_epoch, None)
            # a signal: checkpoint and stop; --checkpoint-every N: checkpoint, never after a bad step
            if signum is not None:
                self._checkpoint()
                raise TrainingInterrupted(signum, self.out)
            if spec.checkpoint_every and state.step % spec.checkpoint_every == 0 and not last:
                self._raise_if_diverged(window)
                self._checkpoint()
        self._epoch_seconds = time.perf_counter() - started
        self._epoch_images = (state.seen - seen_before) * self.world.size  # this session's part of the epoch

    def _forward_loss(self, images: torch.Tensor, cond: torch.Tensor):
        try:
            with autocast(self.device, self.precision):
                return self.loss_fn(self.step_model(images, cond), images)
        except Exception as exc:
            # torch.compile fails on first use where no compiler works: fall back once, loudly.
            if not self._compile_untested:
                raise
            self._compile_untested = False
            self.step_model = self._eager_model
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            notify(self.observer, "on_message", f"warning: torch.compile failed ({reason}); running eagerly")
            with autocast(self.device, self.precision):
                return self.loss_fn(self.step_model(images, cond), images)
        finally:
            self._compile_untested = False

    def _average_loss_gradients(self) -> None:
        """DDP averages the model's gradients over the replicas; a loss's own parameters are averaged here."""
        if self.world.distributed and self.loss_params:
            for p in self.loss_params:
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad.div_(self.world.size)

    def _agreed_signal(self, stop: dict) -> int | None:
        """The signal to stop at, the same on every replica (an all-reduce under DDP), or None."""
        if not self.world.distributed:
            return stop["signum"]
        flag = torch.tensor(float(stop["signum"] or 0), device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item()) or None

    def _log_window(self, window: Window) -> None:
        """Host sync: stop on a non-finite loss, add the window to the epoch's sums, report its metrics."""
        self._raise_if_diverged(window)
        state = self.state
        for key, value in window.sums.items():
            state.sums[key] = state.sums.get(key, 0.0) + float(value)
        state.seen += window.images
        metrics = {k: float(v) / window.images for k, v in window.sums.items()}
        metrics["images_per_s"] = window.images * self.world.size / max(time.perf_counter() - window.started, 1e-9)
        metrics["data_wait_s"] = self.data_wait.take()
        state.steps_log.append({"step": state.step,
                                "epoch_float": state.epoch - 1 + state.batch_in_epoch / len(self.batches), **metrics})
        notify(self.observer, "on_step", state.epoch, state.batch_in_epoch, state.steps_log[-1])

    def _raise_if_diverged(self, window: Window) -> None:
        """A non-finite loss ends the run, naming the last finite checkpoint and how to continue from it."""
        bad_step = window.bad_step()
        if bad_step < 0:
            return
        if bad_step == 1:  # the first forward pass, on the initial weights: no learning rate was involved yet
            loss, model = self.config.loss, self.config.model
            raise GenkitRuntimeError(
                f"the loss was non-finite at step 1, on the initial weights before any update, so a lower --lr "
                f"cannot help: check the options of loss {loss.name!r} ({json.dumps(loss.options)}) and model "
                f"{model.name!r} ({json.dumps(model.options)}), and start a new run with other values")
        lr = self.config.train.lr
        gentler = min(lr / 10, TrainSpec().lr)  # a tenth, and never above the default rate
        checkpoint = latest_checkpoint(self.out)
        kept = f"the last finite checkpoint is {checkpoint}" if checkpoint else "no checkpoint was written"
        raise GenkitRuntimeError(
            f"the loss became non-finite at step {bad_step} (epoch {self.state.epoch}); {kept}. Resume from it with "
            f"a lower --lr (now {lr:g}): `genkit train --resume {self.out} --lr {gentler:g}`")

    def _finish_epoch(self) -> None:
        """The epoch's record (train terms over every replica, validation terms, warnings), its grid, a checkpoint."""
        spec, state = self.config.train, self.state
        keys = sorted(state.sums)
        totals = torch.tensor([state.sums[k] for k in keys] + [float(state.seen)], dtype=torch.float64,
                              device=self.device)
        totals = distributed.all_reduce_sum(self.world, totals).tolist()
        seen = totals[-1]
        record: dict[str, Any] = {"epoch": state.epoch, "step": state.step}
        record.update({f"train_{k}": v / seen for k, v in zip(keys, totals)})
        record["images_per_s"] = self._epoch_images / max(self._epoch_seconds, 1e-9)
        record["seconds"] = round(self._epoch_seconds, 3)
        # A loss may report problems of the epoch (a learned σ at its clip floor): shown in the epoch line.
        warnings = list(getattr(self.loss_fn, "warnings", lambda: [])() or [])
        if warnings:
            record["warnings"] = warnings
        if self.world.is_main:
            record.update({f"val_{k}": v for k, v in evaluate_loss(self.sampling_model, self.loss_fn, self.valid_set,
                                                                   self.device, spec.batch_size,
                                                                   self.precision).items()})
            self.grids.write(state.epoch)
        state.epochs_log.append(record)
        state.epoch += 1
        state.batch_in_epoch, state.sums, state.seen = 0, {}, 0
        if self.world.is_main:
            write_text_atomic(self.out / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in state.epochs_log))
            plot_curves(state.epochs_log, state.steps_log, self.out / LOSS_CURVE_FILE)
        self._checkpoint()
        notify(self.observer, "on_epoch_end", record["epoch"], record)

    def _open_tensorboard(self) -> None:
        """The run's TensorBoard events (main process only), fed as a second observer."""
        state = self.state
        self._tensorboard_log = TensorBoardLog(self.out, self.config, state.step, state.epochs_log, state.steps_log,
                                               warn=lambda text: notify(self.observer, "on_message", text))
        self.observer = Observers(self.observer, self._tensorboard_log)

    # -- checkpoints ---------------------------------------------------------------------------
    def _checkpoint_state(self) -> dict[str, Any]:
        state = self.state
        saved = {
            "optimizer": self.optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch, "step": state.step,
            "sums": dict(state.sums), "seen": state.seen, "world_size": self.world.size,
            "grid_cols": state.grid_cols,
        }
        if self.average is not None:
            saved["ema_updates"] = self.average.updates
        if torch.cuda.is_available():
            saved["rng_cuda"] = torch.cuda.get_rng_state_all()
        return saved

    def _checkpoint(self) -> None:
        """The run folder's weights and logs, then the checkpoint: written last, it is the commit point,
        so a failure anywhere before it leaves the previous checkpoint in force and the resume redoes the rest."""
        if self.world.is_main:
            save_weights(self.sampling_model, self.out / WEIGHTS_FILE)  # what load_run samples with
            if loss_has_state(self.loss_fn):
                save_weights(self.loss_fn, self.out / LOSS_WEIGHTS_FILE)
            write_text_atomic(self.out / STEPS_FILE, "".join(json.dumps(s) + "\n" for s in self.state.steps_log))
            save_checkpoint(self.out, f"step-{self.state.step:09d}", self.model, self._checkpoint_state(),
                            loss=self.loss_fn, average=self.average and self.average.model)
        distributed.barrier(self.world)

    def _restore(self) -> None:
        checkpoint = latest_checkpoint(self.out)
        if checkpoint is None:  # stopped before its first checkpoint was complete: start it again
            notify(self.observer, "on_message", f"{self.out} has no checkpoint yet; starting it from step 0")
            return
        saved = load_checkpoint(checkpoint, self.model, map_location="cpu", loss=self.loss_fn,
                                average=self.average and self.average.model)
        if self.average is not None:
            self.average.updates = int(saved["ema_updates"])
        self.model.to(self.device)
        if isinstance(self.loss_fn, torch.nn.Module):
            self.loss_fn.to(self.device)
        self.optimizer.load_state_dict(saved["optimizer"])
        for group in self.optimizer.param_groups:  # --lr on resume: the config's rate, not the saved one
            group["lr"] = self.config.train.lr
        torch.set_rng_state(saved["rng_cpu"])
        if "rng_cuda" in saved and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["rng_cuda"])
        if self.world.distributed:  # each replica its own noise, reproducibly
            torch.manual_seed(derived_seed(self.config.train.seed * 7919, self.world.rank + saved["step"]))
        self.state = LoopState(
            epoch=saved["epoch"], batch_in_epoch=saved["batch_in_epoch"], step=saved["step"],
            sums=dict(saved["sums"]), seen=saved["seen"], grid_cols=int(saved.get("grid_cols", GRID_COLS)),
            epochs_log=read_jsonl(self.out / METRICS_FILE)[: saved["epoch"] - 1],
            steps_log=[s for s in read_jsonl(self.out / STEPS_FILE) if s["step"] <= saved["step"]])
        notify(self.observer, "on_message",
                f"resuming {self.out} at epoch {self.state.epoch}, step {self.state.step} (from {checkpoint.name})")


def train(config: RunConfig, out_dir: str | Path | None = None, observer: Observer | None = None,
          cache_dir: str | Path | None = None, data_progress: Progress | None = None,
          tensorboard: bool | None = None) -> Run:
    """Train ``config`` into ``out_dir`` (default ``runs/<model>-<data>-<time>``); returns the run.

    ``tensorboard``: write TensorBoard event files into the run folder; ``None`` (the default) when
    the tensorboard package is installed, ``True`` requires it (a UsageError without it).
    """
    return Trainer(config, Path(out_dir) if out_dir else None, observer, cache_dir, data_progress,
                   tensorboard=tensorboard).run()


