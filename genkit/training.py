"""The training loop: one process, or one DDP replica per process under torchrun.

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
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch

from genkit import distributed
from genkit.batches import Batches, choose_placement
from genkit.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from genkit.components import build_components
from genkit.config import RunConfig, TrainSpec
from genkit.data import prepare_dataset
from genkit.errors import GenkitError, GenkitRuntimeError, UsageError
from genkit.files import WriteError, check_output_dir, reporting_write_errors, write_text_atomic
from genkit.images import plot_curves, save_grid
from genkit.run_folder import (CONFIG_FILE, LOSS_CURVE_FILE, METRICS_FILE, RESUMES_FILE, ROWS_FILE, SAMPLES_DIR,
                               STEPS_FILE, LOSS_WEIGHTS_FILE, WEIGHTS_FILE, default_run_dir, epoch_grid_file, read_jsonl)
from genkit.planning import absolute_root, check_training_fits, check_training_settings
from genkit.runs import Run
from genkit.sampling import AttributeTable
from genkit.timing import DataWaitClock
from genkit.weights import loss_has_state, loss_parameters, save_weights
from genkit_datasets.cache import Progress
from genkit_datasets.torch_dataset import CachedImageDataset

GRID_ROWS = 8
GRID_COLS = 8
#: the settings ``resume`` may change: none of them changes what the checkpoint means
RESUMABLE_SETTINGS = ("epochs", "lr", "root", "workers", "data_in", "device")


class TrainingInterrupted(GenkitError):
    """SIGINT/SIGTERM arrived; a checkpoint was written. ``exit_code`` is 128 + the signal."""

    def __init__(self, signum: int, run_dir: Path):
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"{name} received: checkpoint written; resume with `genkit train --resume {run_dir}`")


class Observer(Protocol):
    """What the training loop reports; the CLI draws it with rich. Every method is optional.

    ``on_epoch_end``'s record holds the epoch's metrics and, when the loss reported any through
    its optional ``warnings()``, a list of messages under ``"warnings"`` to show with them.
    """

    def on_message(self, text: str) -> None: ...
    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...
    def on_step(self, epoch: int, step: int, metrics: dict[str, float] | None) -> None: ...
    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None: ...


def _notify(observer, method: str, *args) -> None:
    fn = getattr(observer, method, None) if observer is not None else None
    if fn is not None:
        fn(*args)


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


def _effective_precision(precision: str, device: torch.device, observer) -> str:
    if precision == "bf16" and not (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        _notify(observer, "on_message", f"warning: bf16 is not supported on {device.type} here; training in fp32 instead")
        return "fp32"
    return precision


@torch.no_grad()
def evaluate_loss(model, loss_fn, dataset: CachedImageDataset, device: torch.device, batch_size: int,
                  precision: str = "fp32") -> dict[str, float]:
    """Mean loss terms per image over a whole split."""
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = 0
    for start in range(0, len(dataset), batch_size):
        images_u8, cond = dataset.read_uint8(range(start, min(start + batch_size, len(dataset))))
        images, cond = images_u8.to(device).float().div_(255), cond.to(device)
        with _autocast(device, precision):
            result = loss_fn(model(images, cond), images)
        n = images.shape[0]
        for key, value in {"loss": result.total, **result.terms}.items():
            sums[key] = sums.get(key, 0) + value.detach().float() * n
        count += n
    model.train(was_training)
    return {k: float(v) / count for k, v in sums.items()}


@contextmanager
def _stop_on_signals() -> Iterator[dict]:
    """Record SIGINT/SIGTERM instead of dying; a second signal stops at once."""
    flag: dict[str, int | None] = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["signum"] is not None:
            raise KeyboardInterrupt
        flag["signum"] = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Trainer:
    """Trains one run folder; ``resume=True`` continues from its latest checkpoint."""

    def __init__(self, config: RunConfig, out_dir: Path | None, observer: Observer | None = None,
                 cache_dir: str | Path | None = None, data_progress: Progress | None = None, resume: bool = False):
        self.observer = observer
        self.out = Path(out_dir) if out_dir is not None else default_run_dir(config.model.name, config.data.name)
        if not resume and distributed.world_from_env().is_main:
            check_output_dir(self.out)  # a file, a path under a file, a read-only disk: refused before any work
        self.world = distributed.world_from_env()
        self.device = distributed.init(self.world, distributed.resolve_device(config.train.device))
        spec = config.train
        if spec.batch_size % self.world.size:
            raise UsageError(f"--batch-size {spec.batch_size} is the global batch and must divide evenly over "
                             f"{self.world.size} processes")

        # The main process of each node builds the cache; the others wait and then open it.
        if self.world.local_rank == 0:
            info, _ = prepare_dataset(config.data.name, root=config.data.root, image_size=config.data.image_size,
                                      cache_dir=cache_dir, progress=data_progress, options=config.data.options)
        distributed.barrier(self.world)
        if self.world.local_rank != 0:
            info, _ = prepare_dataset(config.data.name, root=config.data.root, image_size=config.data.image_size,
                                      cache_dir=cache_dir, options=config.data.options)
        if info.rebuilt_because:
            _notify(observer, "on_message", f"the cache {info.path} was rebuilt: {info.rebuilt_because}")
        if resume and config.data.cache_fingerprint not in (None, info.fingerprint):
            _notify(observer, "on_message", "warning: the dataset changed since this run started (new fingerprint)")
        self.train_set = CachedImageDataset(info.path, "train", limit=config.data.limit)
        valid_split = "valid" if info.split_sizes.get("valid") else "test"
        self.valid_set = CachedImageDataset(info.path, valid_split, limit=config.data.limit, in_memory=True)
        if list(info.attribute_names) != list(config.data.attribute_names):
            raise UsageError(f"the {config.data.name} data now has {len(info.attribute_names)} attributes, not the "
                             f"{len(config.data.attribute_names)} this run was planned with; start a new run")
        self.config = config

        if not resume and (self.out / CONFIG_FILE).exists():
            raise UsageError(f"{self.out} already holds a run; choose another --out, or continue it with --resume")
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
        self.precision = _effective_precision(spec.precision, self.device, observer)
        self.optimizer = make_optimizer(self.model, spec.lr, extra=self.loss_params)
        self.step_model = self.model
        if self.world.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self._eager_model = self.step_model
        self._compile_untested = spec.compile
        if spec.compile:
            self.step_model = _compile(self.step_model, observer)
        self.placement, self.placement_reason = choose_placement(spec.data_in, self.train_set, self.device)
        self.batches = Batches(self.train_set, spec.batch_size // self.world.size, spec.seed, self.device,
                               self.placement, rank=self.world.rank, world_size=self.world.size, workers=spec.workers)
        self.data_wait = DataWaitClock(self.device)  # reported per logged window as data_wait_s

        self.epoch, self.batch_in_epoch, self.step = 1, 0, 0
        self.sums: dict[str, float] = {}
        self.seen = 0
        self.epochs_log: list[dict] = []
        self.steps_log: list[dict] = []
        self._epoch_seconds = 0.0
        if resume:
            self._restore()

    # -- state -------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step,
            "sums": dict(self.sums), "seen": self.seen, "world_size": self.world.size,
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def _restore(self) -> None:
        checkpoint = latest_checkpoint(self.out)
        if checkpoint is None:  # stopped before its first checkpoint was complete: start it again
            _notify(self.observer, "on_message", f"{self.out} has no checkpoint yet; starting it from step 0")
            return
        state = load_checkpoint(checkpoint, self.model, map_location="cpu", loss=self.loss_fn)
        self.model.to(self.device)
        if isinstance(self.loss_fn, torch.nn.Module):
            self.loss_fn.to(self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # --lr on resume: the config's rate, not the saved one
            group["lr"] = self.config.train.lr
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        if self.world.distributed:  # each replica its own noise, reproducibly
            torch.manual_seed(self.config.train.seed * 7919 + self.world.rank + state["step"])
        self.epoch, self.batch_in_epoch, self.step = state["epoch"], state["batch_in_epoch"], state["step"]
        self.sums, self.seen = dict(state["sums"]), state["seen"]
        self.epochs_log = read_jsonl(self.out / METRICS_FILE)[: self.epoch - 1]
        self.steps_log = [s for s in read_jsonl(self.out / STEPS_FILE) if s["step"] <= self.step]
        _notify(self.observer, "on_message",
                f"resuming {self.out} at epoch {self.epoch}, step {self.step} (from {checkpoint.name})")

    def _checkpoint(self) -> None:
        """The run folder's weights and logs, then the checkpoint: written last, it is the commit point,
        so a failure anywhere before it leaves the previous checkpoint in force and the resume redoes the rest."""
        if self.world.is_main:
            save_weights(self.model, self.out / WEIGHTS_FILE)
            if loss_has_state(self.loss_fn):
                save_weights(self.loss_fn, self.out / LOSS_WEIGHTS_FILE)
            write_text_atomic(self.out / STEPS_FILE, "".join(json.dumps(s) + "\n" for s in self.steps_log))
            save_checkpoint(self.out, f"step-{self.step:09d}", self.model, self._state(), loss=self.loss_fn)
        distributed.barrier(self.world)

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> Run:
        try:
            return self._run()
        except WriteError as exc:
            raise self._write_failed(exc) from None

    def _run(self) -> Run:
        spec = self.config.train
        main = self.world.is_main
        if main:
            with reporting_write_errors(self.out):
                self.out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.out / CONFIG_FILE, self.config.to_json())
            AttributeTable.from_rows(self.config.data.attribute_names, self.train_set.attributes).save(self.out)
            _notify(self.observer, "on_message",
                    f"training {self.config.model.name} on {self.config.data.name}: {len(self.train_set)} images "
                    f"{self.config.data.image_size[0]}x{self.config.data.image_size[1]}, data in "
                    f"{self.placement_reason}, device {self.device}"
                    + (f", {self.world.size} processes" if self.world.distributed else ""))
        grid_cond, grid_z = self._grid_inputs()
        steps_per_epoch = len(self.batches)
        self.model.train()
        if self.step == 0:  # a checkpoint before the first step: a diverging run always has a finite state
            self._checkpoint()  # (decided from the step, not the folder, so every DDP replica agrees)
        with _stop_on_signals() as stop:
            while self.epoch <= spec.epochs:
                self._train_epoch(steps_per_epoch, stop)
                self._finish_epoch(grid_cond, grid_z)
        distributed.shutdown(self.world)
        self.model.eval()
        return Run(self.out, self.config, self.model, self.conditioner, self.loss_fn, self.device)

    def _train_epoch(self, steps_per_epoch: int, stop: dict) -> None:
        spec = self.config.train
        epoch = self.epoch
        _notify(self.observer, "on_epoch_start", epoch, spec.epochs, steps_per_epoch)
        window: dict[str, torch.Tensor] = {}
        window_n = 0
        first_bad = torch.tensor(-1, device=self.device)
        step_counter = torch.tensor(self.step, device=self.device)
        started = time.perf_counter()
        for images_u8, cond in self.data_wait.timed(self.batches.epoch(epoch, skip=self.batch_in_epoch)):
            images = images_u8.float().div_(255)
            if self.device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            result = self._forward_loss(images, cond)
            self.optimizer.zero_grad(set_to_none=True)
            result.total.backward()
            if self.world.distributed and self.loss_params:  # DDP averages the model's gradients, not the loss's
                for p in self.loss_params:
                    if p.grad is not None:
                        torch.distributed.all_reduce(p.grad)
                        p.grad.div_(self.world.size)
            self.optimizer.step()
            self.step += 1
            self.batch_in_epoch += 1
            n = images.shape[0]
            window_n += n
            for key, value in {"loss": result.total, **result.terms}.items():
                window[key] = window.get(key, 0) + value.detach().float() * n
            # Remember the first non-finite step on the device: no host sync per step.
            step_counter += 1
            bad = ~torch.isfinite(result.total.detach())
            first_bad = torch.where(bad & (first_bad < 0), step_counter, first_bad)

            last = self.batch_in_epoch == steps_per_epoch
            stop_signal = None if self.world.distributed else stop["signum"]
            if self.batch_in_epoch % spec.log_every == 0 or last or stop_signal is not None:
                self._log_window(window, window_n, first_bad, started, epoch, steps_per_epoch)
                window, window_n = {}, 0
                if self.world.distributed:  # every replica stops at the same step, or none does
                    flag = torch.tensor(float(stop["signum"] or 0), device=self.device)
                    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                    stop_signal = int(flag.item()) or None
            else:
                _notify(self.observer, "on_step", epoch, self.batch_in_epoch, None)
            if stop_signal is not None:
                self._checkpoint()
                raise TrainingInterrupted(stop_signal, self.out)
            if spec.checkpoint_every and self.step % spec.checkpoint_every == 0 and not last:
                self._raise_if_diverged(first_bad, epoch)  # never checkpoint weights a non-finite step touched
                self._checkpoint()
        self._epoch_seconds = time.perf_counter() - started

    def _forward_loss(self, images: torch.Tensor, cond: torch.Tensor):
        try:
            with _autocast(self.device, self.precision):
                return self.loss_fn(self.step_model(images, cond), images)
        except Exception as exc:
            # torch.compile fails on first use where no compiler works: fall back once, loudly.
            if not self._compile_untested:
                raise
            self._compile_untested = False
            self.step_model = self._eager_model
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _notify(self.observer, "on_message", f"warning: torch.compile failed ({reason}); running eagerly")
            with _autocast(self.device, self.precision):
                return self.loss_fn(self.step_model(images, cond), images)
        finally:
            self._compile_untested = False

    def _raise_if_diverged(self, first_bad: torch.Tensor, epoch: int) -> None:
        """A non-finite loss ends the run, naming the last finite checkpoint and how to continue from it."""
        bad_step = int(first_bad.item())
        if bad_step < 0:
            return
        lr = self.config.train.lr
        gentler = min(lr / 10, TrainSpec().lr)  # a tenth, and never above the default rate
        checkpoint = latest_checkpoint(self.out)
        kept = f"the last finite checkpoint is {checkpoint}" if checkpoint else "no checkpoint was written"
        raise GenkitRuntimeError(
            f"the loss became non-finite at step {bad_step} (epoch {epoch}); {kept}. Resume from it with a lower "
            f"--lr (now {lr:g}): `genkit train --resume {self.out} --lr {gentler:g}`")

    def _write_failed(self, exc: WriteError) -> WriteError:
        """A failed write (a full disk): say what is still safe and how to continue once there is room."""
        checkpoint = latest_checkpoint(self.out) if self.out.is_dir() else None
        if checkpoint is not None:
            then = (f"the last complete checkpoint, {checkpoint}, is intact: free some space, then "
                    f"`genkit train --resume {self.out}`")
        else:
            then = f"no checkpoint was written: free some space, then `genkit train --resume {self.out}`"
        return WriteError(exc.path, f"{exc.reason}; {then}", exc.errno)

    def _log_window(self, window, window_n, first_bad, started, epoch, steps_per_epoch) -> None:
        self._raise_if_diverged(first_bad, epoch)
        for key, value in window.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.seen += window_n
        metrics = {k: float(v) / window_n for k, v in window.items()}
        metrics["images_per_s"] = window_n * self.world.size / max(time.perf_counter() - started, 1e-9)
        metrics["data_wait_s"] = self.data_wait.take()
        self.steps_log.append({"step": self.step, "epoch_float": epoch - 1 + self.batch_in_epoch / steps_per_epoch,
                               **metrics})
        _notify(self.observer, "on_step", epoch, self.batch_in_epoch, metrics)

    def _finish_epoch(self, grid_cond: torch.Tensor, grid_z: torch.Tensor) -> None:
        spec = self.config.train
        totals = torch.tensor([self.sums.get(k, 0.0) for k in sorted(self.sums)] + [float(self.seen)],
                              dtype=torch.float64, device=self.device)
        totals = distributed.all_reduce_sum(self.world, totals).tolist()
        seen = totals[-1]
        record: dict[str, Any] = {"epoch": self.epoch, "step": self.step}
        record.update({f"train_{k}": v / seen for k, v in zip(sorted(self.sums), totals)})
        record["images_per_s"] = seen / max(self._epoch_seconds, 1e-9)
        record["seconds"] = round(self._epoch_seconds, 3)
        # A loss may report problems of the epoch (a learned σ at its clip floor): shown in the epoch line.
        warnings = list(getattr(self.loss_fn, "warnings", lambda: [])() or [])
        if warnings:
            record["warnings"] = warnings
        if self.world.is_main:
            record.update({f"val_{k}": v for k, v in evaluate_loss(self.model, self.loss_fn, self.valid_set, self.device,
                                                                   spec.batch_size, self.precision).items()})
            self.model.eval()
            with torch.no_grad():
                save_grid(self.model.sample(grid_cond, z=grid_z), epoch_grid_file(self.out, self.epoch), nrow=GRID_COLS)
            self.model.train()
        self.epochs_log.append(record)
        self.epoch += 1
        self.batch_in_epoch, self.sums, self.seen = 0, {}, 0
        if self.world.is_main:
            write_text_atomic(self.out / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in self.epochs_log))
            plot_curves(self.epochs_log, self.steps_log, self.out / LOSS_CURVE_FILE)
        self._checkpoint()
        _notify(self.observer, "on_epoch_end", record["epoch"], record)

    def _grid_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed attribute sets (rows) and fixed latent codes (columns), so epochs compare."""
        seen: list[torch.Tensor] = []
        for vector in self.valid_set.attributes:
            if not any(torch.equal(vector, s) for s in seen):
                seen.append(vector)
            if len(seen) == GRID_ROWS:
                break
        cond = torch.stack(seen).repeat_interleave(GRID_COLS, dim=0).to(self.device)
        z = torch.randn(GRID_COLS, self.model.latent_dim, generator=torch.Generator().manual_seed(self.config.train.seed + 1))
        z = z.repeat(len(seen), 1).to(self.device)
        if self.world.is_main:
            names = self.config.data.attribute_names
            rows = [",".join(n for n, v in zip(names, s.tolist()) if v > 0.5) or "(none)" for s in seen]
            (self.out / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.out / SAMPLES_DIR / ROWS_FILE, json.dumps(rows, indent=1))
        return cond, z


def make_optimizer(model: torch.nn.Module, lr: float, extra: list[torch.nn.Parameter] = ()) -> torch.optim.Optimizer:
    """Adam, as in the paper, with the fused kernel (one pass over all parameters): on small
    models at small batches the per-tensor Adam loop is a large share of the step on a CPU.
    ``extra`` are parameters outside the model trained with it (a loss's own, e.g. a learned σ)."""
    return torch.optim.Adam([*model.parameters(), *extra], lr=lr, fused=True)


def train(config: RunConfig, out_dir: str | Path | None = None, observer: Observer | None = None,
          cache_dir: str | Path | None = None, data_progress: Progress | None = None) -> Run:
    """Train ``config`` into ``out_dir`` (default ``runs/<model>-<data>-<time>``); returns the run."""
    return Trainer(config, Path(out_dir) if out_dir else None, observer, cache_dir, data_progress).run()


def resume(run_dir: str | Path, epochs: int | None = None, observer: Observer | None = None,
           cache_dir: str | Path | None = None, data_progress: Progress | None = None, *,
           lr: float | None = None, root: str | Path | None = None, workers: int | None = None,
           data_in: str | None = None, device: str | None = None) -> Run | None:
    """Continue the run in ``run_dir`` from its latest checkpoint.

    The settings that do not change what the checkpoint means may be changed: ``epochs`` (train
    further), ``lr`` (continue a diverged run more gently), ``root`` (the data moved), ``workers``,
    ``data_in`` and ``device``. The new values go into the run's ``config.json`` and each resume is
    logged in ``resumes.jsonl`` (step, time, what changed from what). Returns None when the run
    has already finished its epochs (nothing to do).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run folder {run_dir} does not exist; pass the folder `genkit train` wrote")
    config_path = run_dir / CONFIG_FILE
    config = RunConfig.load(config_path)
    wanted = {"epochs": epochs, "lr": lr, "root": absolute_root(root), "workers": workers, "data_in": data_in,
              "device": device}
    changes = resume_changes(config, {k: v for k, v in wanted.items() if v is not None})
    config = apply_changes(config, changes)
    try:
        check_training_fits(config)
    except UsageError as exc:
        raise UsageError(f"{config_path}: {exc}") from None
    trainer = Trainer(config, run_dir, observer, cache_dir, data_progress, resume=True)
    if trainer.epoch > config.train.epochs:
        distributed.shutdown(trainer.world)
        return None
    if changes:
        try:
            record_resume(trainer, changes)
        except WriteError as exc:
            raise trainer._write_failed(exc) from None
    return trainer.run()


def resume_changes(config: RunConfig, wanted: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{setting: (old, new)}`` for the settings ``wanted`` changes; each new value is checked first."""
    unknown = sorted(set(wanted) - set(RESUMABLE_SETTINGS))
    if unknown:
        raise UsageError(f"{unknown[0]!r} cannot be changed when resuming; what can: {', '.join(RESUMABLE_SETTINGS)}")
    current = {**asdict(config.train), "root": config.data.root}
    changes = {k: (current[k], v) for k, v in wanted.items() if current[k] != v}
    check_training_settings(replace(config.train, **{k: v for k, (_, v) in changes.items() if k != "root"}))
    return changes


def apply_changes(config: RunConfig, changes: dict[str, tuple[Any, Any]]) -> RunConfig:
    train = {k: new for k, (_, new) in changes.items() if k != "root"}
    data = config.data if "root" not in changes else replace(config.data, root=changes["root"][1])
    return replace(config, data=data, train=replace(config.train, **train))


def record_resume(trainer: "Trainer", changes: dict[str, tuple[Any, Any]]) -> None:
    """One line in ``resumes.jsonl`` and one message: the step resumed at and each changed setting."""
    described = ", ".join(f"{k.replace('_', '-')} {old} -> {new}" for k, (old, new) in changes.items())
    _notify(trainer.observer, "on_message", f"changed on resume: {described}")
    if not trainer.world.is_main:
        return
    record = {"step": trainer.step, "epoch": trainer.epoch, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "changed": {k: {"from": old, "to": new} for k, (old, new) in changes.items()}}
    path = trainer.out / RESUMES_FILE
    lines = path.read_text() if path.is_file() else ""
    write_text_atomic(path, lines + json.dumps(record) + "\n")


def _compile(model, observer):
    """torch.compile, checked once; without a working compiler, a warning and eager mode."""
    try:
        import torch._dynamo  # noqa: F401

        return torch.compile(model)
    except Exception as exc:
        _notify(observer, "on_message", f"warning: torch.compile is unavailable ({exc}); running eagerly")
        return model
