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
from genkit.errors import UsageError
from genkit.runtime import distributed
from genkit.sampling.attributes import AttributeTable
from genkit.sampling.run import Run
from genkit.store.files import WriteError, check_output_dir, reporting_write_errors, write_text_atomic
from genkit.store.run_folder import CONFIG_FILE, METRICS_FILE, STEPS_FILE, default_run_dir, read_jsonl
from genkit.store.weights import loss_parameters
from genkit.training.averaging import WeightAverage
from genkit.training.checkpoints import (latest_checkpoint, load_checkpoint, random_state, restore_random_state,
                                         write_failed)
from genkit.training.epoch_grids import GRID_COLS, EpochGrids
from genkit.training.loop import (LoopState, Observer, Observers, Window, autocast, compile_model, divergence,
                                  effective_precision, evaluate_loss, make_optimizer, notify)
from genkit.training.observers import Checkpointer, GridWriter, RunLog
from genkit.training.step import (BUNDLED_OPTIMIZER, TrainingStep, bundled_step, headline, owned_optimizers,
                                  restore_optimizers, step_owner, validation)
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
                                      progress=data_progress, options=data.options, saved=True)
        distributed.barrier(self.world)
        if self.world.local_rank != 0:
            info, _ = prepare_dataset(data.name, root=data.root, image_size=data.image_size, cache_dir=cache_dir,
                                      options=data.options, saved=True)
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
        """Conditioner, model and loss on the device, the weight average, and the step: the bundled one
        (forward through DDP, possibly compiled, the loss, one Adam) or the model's or loss's own."""
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
        self.owner = step_owner(self.model, self.loss_fn)
        self.headline = headline(self.model, self.loss_fn)
        if self.owner is None:
            self._bundled_step(spec)
        else:
            self._owned_step(spec)
        # --ema: an averaged copy of the weights (taken once every process holds the first one's); it is what
        # the grids, validation and the run folder use
        self.average = WeightAverage(self.model, spec.ema) if spec.ema else None
        self.sampling_model = self.average.model if self.average is not None else self.model
        if self.world.distributed:  # the same weights everywhere, and each process its own noise
            torch.manual_seed(derived_seed(spec.seed * 7919, self.world.rank))

    def _bundled_step(self, spec: TrainSpec) -> None:
        self.optimizers = {BUNDLED_OPTIMIZER: make_optimizer(self.model, spec.lr, extra=self.loss_params)}
        self.step_model = self.model
        if self.world.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self._eager_model = self.step_model
        self._compile_untested = spec.compile
        if spec.compile:
            self.step_model = compile_model(self.step_model, self.observer)
        # DDP averages the model's gradients over the replicas; a loss's own parameters are averaged by hand
        self.step = TrainingStep(self.optimizers, self.world, {BUNDLED_OPTIMIZER: self.loss_params},
                                 model=self.model, loss=self.loss_fn, grad_clip=spec.grad_clip)
        self.step_fn = bundled_step(self._forward_loss)

    def _owned_step(self, spec: TrainSpec) -> None:
        """The component's own step: its optimizers, its updates; gradients averaged over the processes
        at each update (its modules are called directly, not through DDP), the same initial weights on all."""
        kind, component = self.owner
        self.optimizers = owned_optimizers(self.owner, self.model, spec.lr, self.loss_params)
        if self.world.distributed:
            distributed.broadcast_module(self.model)
            if isinstance(self.loss_fn, torch.nn.Module):
                distributed.broadcast_module(self.loss_fn)
        if spec.compile:
            notify(self.observer, "on_message", f"warning: --compile compiles a model's forward, and "
                                                f"{kind} {getattr(self.config, kind).name!r} runs its own training "
                                                "step; training eagerly")
        by_hand = {name: [p for g in opt.param_groups for p in g["params"]] for name, opt in self.optimizers.items()}
        self.step = TrainingStep(self.optimizers, self.world, by_hand, model=self.model, loss=self.loss_fn,
                                 grad_clip=spec.grad_clip)
        self.step_fn = component.training_step

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
        tensorboard = None
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
                tensorboard = self._open_tensorboard()
        say = lambda text: notify(self.observer, "on_message", text)  # noqa: E731
        grids = EpochGrids(self.sampling_model, self.valid_set.attributes, self.config, self.device, self.out,
                           self.world.is_main)
        # the loop's observers, in the order they hear each event (see genkit.training.observers)
        self.events = Observers(GridWriter(grids, say), RunLog(self.out, self.world.is_main),
                                Checkpointer(self.out, self.world, self.model, self.loss_fn, self.average,
                                             self._checkpoint_state),
                                self.observer, tensorboard)
        self.events.on_train_start(self.state)
        self.model.train()
        if self.state.step == 0:  # a checkpoint before the first step: a diverging run always has a finite state
            self.events.on_checkpoint(self.state)  # (decided from the step, not the folder: every replica agrees)
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
        self.events.on_epoch_start(state.epoch, spec.epochs, steps)
        window = Window(self.device, state.step)
        started, seen_before = time.perf_counter(), state.seen
        for images_u8, cond in self.data_wait.timed(self.batches.epoch(state.epoch, skip=state.batch_in_epoch)):
            images = images_u8.float().div_(255)
            if self.device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            # the step (forward, backward, update, or the component's own): no host sync
            self.step.begin(state.step)
            with autocast(self.device, self.precision):
                result = self.step_fn(images, cond, self.step)
            if self.average is not None:
                self.average.update(self.model)
            state.step += 1
            state.batch_in_epoch += 1
            window.add(result, images.shape[0], self.step.bad)
            # every --log-every steps and at the epoch's end: the host syncs, checks for NaN/inf, logs
            last = state.batch_in_epoch == steps
            signum = None if self.world.distributed else stop["signum"]
            if state.batch_in_epoch % spec.log_every == 0 or last or signum is not None:
                self._log_window(window)
                window = Window(self.device, state.step)
                signum = self._agreed_signal(stop)
            else:
                self.events.on_step(state.epoch, state.batch_in_epoch, None)
            # a signal: checkpoint and stop; --checkpoint-every N: checkpoint, never after a bad step
            if signum is not None:
                self.events.on_checkpoint(state)
                raise TrainingInterrupted(signum, self.out)
            if spec.checkpoint_every and state.step % spec.checkpoint_every == 0 and not last:
                self._raise_if_diverged(window)
                self.events.on_checkpoint(state)
        self._epoch_seconds = time.perf_counter() - started
        self._epoch_images = (state.seen - seen_before) * self.world.size  # this session's part of the epoch

    def _forward_loss(self, images: torch.Tensor, cond: torch.Tensor):
        """The bundled step's forward and loss (under the loop's autocast)."""
        try:
            return self.loss_fn(self.step_model(images, cond), images)
        except Exception as exc:
            # torch.compile fails on first use where no compiler works: fall back once, loudly.
            if not self._compile_untested:
                raise
            self._compile_untested = False
            self.step_model = self._eager_model
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            notify(self.observer, "on_message", f"warning: torch.compile failed ({reason}); running eagerly")
            return self.loss_fn(self.step_model(images, cond), images)
        finally:
            self._compile_untested = False

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
        self.events.on_step(state.epoch, state.batch_in_epoch, state.steps_log[-1])

    def _raise_if_diverged(self, window: Window) -> None:
        """A non-finite loss ends the run, naming the last finite checkpoint and how to continue from it."""
        bad_step = window.bad_step()
        if bad_step >= 0:
            raise divergence(bad_step, self.config, self.out, self.state.epoch, self.owner is not None)

    def _finish_epoch(self) -> None:
        """The epoch's record (train terms over every replica, validation terms, warnings), then its events:
        the grid, the logs, the checkpoint, the caller's observer."""
        state = self.state
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
            record.update({f"val_{k}": v for k, v in self._validation_terms().items()})
        if self.headline != "loss":  # the term `genkit runs` shows, as the model or loss declared it
            record["headline"] = self.headline
        state.epochs_log.append(record)
        state.epoch += 1
        state.batch_in_epoch, state.sums, state.seen = 0, {}, 0
        self.events.on_epoch_end(record["epoch"], record)

    def _validation_terms(self) -> dict[str, float]:
        """Mean validation terms per image (nothing for an owned step without a ``validation_step``)."""
        validate = validation(self.owner, self.sampling_model, self.loss_fn, self.world)
        return {} if validate is None else evaluate_loss(self.sampling_model, validate, self.valid_set, self.device,
                                                         self.config.train.batch_size, self.precision)

    def _open_tensorboard(self) -> TensorBoardLog:
        """The run's TensorBoard events (main process only), fed as the last observer."""
        state = self.state
        self._tensorboard_log = TensorBoardLog(self.out, self.config, state.step, state.epochs_log, state.steps_log,
                                               warn=lambda text: notify(self.observer, "on_message", text))
        return self._tensorboard_log

    # -- checkpoints ---------------------------------------------------------------------------
    def _checkpoint_state(self) -> dict[str, Any]:
        state = self.state
        saved = {
            "optimizers": {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()},
            **random_state(self.world, self.device),
            "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch, "step": state.step,
            "sums": dict(state.sums), "seen": state.seen, "world_size": self.world.size,
            "grid_cols": state.grid_cols,
        }
        if self.average is not None:
            saved["ema_updates"] = self.average.updates
        return saved

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
        restore_optimizers(self.optimizers, saved, checkpoint)
        restore_random_state(saved, self.world, self.device, self.config.train.seed)
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


