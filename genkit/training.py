"""Training: plan a run (validate everything, write nothing), then train it into a run folder.

The loop is lean: batches come from uint8 tensors held in RAM or on the GPU when the cache fits
(else from a DataLoader over the HDF5 cache), loss terms accumulate on the device, and the host
synchronises only every ``log_every`` steps. Seeded and deterministic on the CPU.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch

from genkit import __version__
from genkit.components import CONDITIONER_ARGS, MODEL_ARGS, build_components, resolve
from genkit.config import ComponentSpec, DataSpec, RunConfig, TrainSpec
from genkit.data import open_source, prepare_dataset
from genkit.errors import GenkitRuntimeError, UsageError
from genkit.files import write_text_atomic
from genkit.images import plot_curves, save_grid
from genkit.runs import CONFIG_FILE, WEIGHTS_FILE, Run, resolve_device, save_weights
from genkit_datasets.cache import Progress
from genkit_datasets.preprocess import parse_image_size
from genkit_datasets.torch_dataset import CachedImageDataset

PRECISIONS = ("fp32", "bf16")
DATA_PLACEMENTS = ("auto", "disk", "ram", "gpu")
GRID_ROWS = 8
GRID_COLS = 8


class Observer(Protocol):
    """What the training loop reports; the CLI draws it with rich. Every method is optional."""

    def on_message(self, text: str) -> None: ...
    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...
    def on_step(self, epoch: int, step: int, metrics: dict[str, float] | None) -> None: ...
    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None: ...


def _notify(observer, method: str, *args) -> None:
    fn = getattr(observer, method, None) if observer is not None else None
    if fn is not None:
        fn(*args)


def plan_run(model: str = "cvae", data: str = "shapes", conditioner: str = "tiled-onehot", loss: str = "beta-elbo",
             *, model_options: dict | None = None, conditioner_options: dict | None = None,
             loss_options: dict | None = None, data_options: dict | None = None, root: str | None = None,
             image_size: Any = None, limit: int | None = None, epochs: int = 8, batch_size: int = 16,
             lr: float = 2e-3, seed: int = 0, device: str = "auto", precision: str = "fp32",
             compile: bool = False, log_every: int = 25, data_in: str = "auto", workers: int = 0,
             checkpoint_every: int = 0) -> RunConfig:
    """Check every choice and return the run's config; nothing is written or built yet.

    Raises :class:`UsageError` for an unknown name or option, a value out of range, or an image
    size the model cannot take, before any file or cache is touched.
    """
    _positive("--epochs", epochs)
    _positive("--batch-size", batch_size)
    if limit is not None:
        _positive("--limit", limit)
    if not (lr > 0 and math.isfinite(lr)):
        raise UsageError(f"learning rate {lr} must be a positive number, for example 1e-3")
    if precision not in PRECISIONS:
        raise UsageError(f"precision {precision!r} is not known; choose one of: {', '.join(PRECISIONS)}")
    if data_in not in DATA_PLACEMENTS:
        raise UsageError(f"--data-in {data_in!r} is not known; choose one of: {', '.join(DATA_PLACEMENTS)}")
    resolve_device(device)

    source, data_resolved = open_source(data, **(data_options or {}))
    size = parse_image_size(image_size) if image_size is not None else tuple(source.default_image_size)
    cond_spec = resolve("conditioners", ComponentSpec(conditioner, conditioner_options or {}), skip=CONDITIONER_ARGS)
    model_spec = resolve("models", ComponentSpec(model, model_options or {}), skip=MODEL_ARGS)
    loss_spec = resolve("losses", ComponentSpec(loss, loss_options or {}))
    config = RunConfig(
        data=DataSpec(name=data, options=data_resolved, root=str(root) if root else None, image_size=size,
                      limit=limit, attribute_names=list(getattr(source, "attribute_names", ["placeholder"]))),
        conditioner=cond_spec, model=model_spec, loss=loss_spec,
        train=TrainSpec(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, precision=precision,
                        compile=compile, log_every=log_every, data_in=data_in, workers=workers,
                        checkpoint_every=checkpoint_every),
        genkit_version=__version__,
    )
    build_components(config)  # a dry build: the model's own checks (image size, widths) run now
    return config


def _positive(what: str, value: int) -> None:
    if value is None or value < 1:
        raise UsageError(f"{what} {value} must be a positive integer")


def default_run_dir(config: RunConfig, base: str | Path = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(base) / f"{config.model.name}-{config.data.name}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path(base) / f"{config.model.name}-{config.data.name}-{stamp}-{suffix}"
    return path


@dataclass
class _Batches:
    """Shuffled batches of (uint8 images, float attributes), seeded per epoch."""

    dataset: CachedImageDataset
    batch_size: int
    seed: int
    device: torch.device
    placement: str
    workers: int = 0
    images: torch.Tensor | None = None
    attributes: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.placement in ("ram", "gpu"):
            images = self.dataset.images_uint8()
            attributes = self.dataset.attributes
            if self.placement == "gpu":
                images, attributes = images.to(self.device), attributes.to(self.device)
            elif self.device.type == "cuda":
                images = images.pin_memory()
            self.images, self.attributes = images, attributes

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.dataset), generator=generator)
        non_blocking = self.device.type == "cuda"
        if self.images is not None:
            if self.placement == "gpu":
                order = order.to(self.device)
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                yield (self.images[idx].to(self.device, non_blocking=non_blocking),
                       self.attributes[idx].to(self.device, non_blocking=non_blocking))
            return
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=order.tolist(), num_workers=self.workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
            collate_fn=_collate_uint8)
        for images, attributes in loader:
            yield images.to(self.device, non_blocking=non_blocking), attributes.to(self.device, non_blocking=non_blocking)


def _collate_uint8(items):
    images = torch.stack([(img * 255).round().to(torch.uint8) for img, _ in items])
    return images, torch.stack([a for _, a in items])


def choose_placement(requested: str, dataset: CachedImageDataset, device: torch.device) -> str:
    """Where the training images live: on the GPU or in RAM when they fit, else read from disk."""
    if requested != "auto":
        if requested == "gpu" and device.type != "cuda":
            raise UsageError("--data-in gpu needs a CUDA device; use --data-in ram or auto")
        return requested
    nbytes = len(dataset) * math.prod(dataset.image_shape)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes < 0.3 * free:
            return "gpu"
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        available = 4 << 30
    return "ram" if nbytes < 0.4 * available else "disk"


def _grid_conditions(valid: CachedImageDataset, rows: int) -> torch.Tensor:
    """Up to ``rows`` distinct attribute vectors from the validation split, in id order."""
    seen: list[torch.Tensor] = []
    for vector in valid.attributes:
        if not any(torch.equal(vector, s) for s in seen):
            seen.append(vector)
        if len(seen) == rows:
            break
    return torch.stack(seen)


def _describe(vector: torch.Tensor, names: list[str]) -> str:
    return ",".join(n for n, v in zip(names, vector.tolist()) if v > 0.5) or "(none)"


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


def _effective_precision(precision: str, device: torch.device, observer) -> str:
    if precision == "bf16" and not (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        _notify(observer, "on_message",
                f"warning: bf16 is not supported on {device.type} here; training in fp32 instead")
        return "fp32"
    return precision


@torch.no_grad()
def evaluate_loss(model, loss_fn, dataset: CachedImageDataset, device: torch.device, batch_size: int,
                  precision: str = "fp32") -> dict[str, float]:
    """Mean loss terms over a whole split (per image)."""
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = 0
    images_all = dataset.images_uint8()
    for start in range(0, len(dataset), batch_size):
        images = images_all[start:start + batch_size].to(device).float().div_(255)
        cond = dataset.attributes[start:start + batch_size].to(device)
        with _autocast(device, precision):
            result = loss_fn(model(images, cond), images)
        n = images.shape[0]
        for key, value in {"loss": result.total, **result.terms}.items():
            sums[key] = sums.get(key, 0) + value.detach().float() * n
        count += n
    model.train()
    return {k: float(v) / count for k, v in sums.items()}


def train(config: RunConfig, out_dir: str | Path | None = None, observer: Observer | None = None,
          cache_dir: str | Path | None = None, data_progress: Progress | None = None) -> Run:
    """Train ``config`` into ``out_dir`` (default ``runs/<model>-<data>-<time>``); returns the run."""
    device = resolve_device(config.train.device)
    info, _ = prepare_dataset(config.data.name, root=config.data.root, image_size=config.data.image_size,
                              cache_dir=cache_dir, progress=data_progress, options=config.data.options)
    train_set = CachedImageDataset(info.path, "train", limit=config.data.limit)
    valid_split = "valid" if "valid" in info.split_sizes else "test"
    valid_set = CachedImageDataset(info.path, valid_split, limit=config.data.limit, in_memory=True)
    config = replace(config, data=replace(config.data, attribute_names=list(info.attribute_names),
                                          cache_fingerprint=info.fingerprint))

    out = Path(out_dir) if out_dir is not None else default_run_dir(config)
    if (out / CONFIG_FILE).exists():
        raise UsageError(f"{out} already holds a run; choose another --out or remove it")
    torch.manual_seed(config.train.seed)
    conditioner, model, loss_fn = build_components(config)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / CONFIG_FILE, config.to_json())

    spec = config.train
    precision = _effective_precision(spec.precision, device, observer)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    step_model = _maybe_compile(model, spec.compile, observer)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
    placement = choose_placement(spec.data_in, train_set, device)
    batches = _Batches(train_set, spec.batch_size, spec.seed, device, placement, workers=spec.workers)
    _notify(observer, "on_message",
            f"training {config.model.name} on {config.data.name}: {len(train_set)} images "
            f"{config.data.image_size[0]}x{config.data.image_size[1]}, data in {placement}, device {device}")

    grid_cond = _grid_conditions(valid_set, GRID_ROWS).to(device)
    grid_cond = grid_cond.repeat_interleave(GRID_COLS, dim=0)
    grid_z = torch.randn(GRID_COLS, model.latent_dim, generator=torch.Generator().manual_seed(spec.seed + 1))
    grid_z = grid_z.repeat(len(grid_cond) // GRID_COLS, 1).to(device)
    rows = [_describe(v, config.data.attribute_names) for v in grid_cond[::GRID_COLS].cpu()]
    (out / "samples").mkdir(exist_ok=True)
    write_text_atomic(out / "samples" / "rows.json", json.dumps(rows, indent=1))

    epochs_log: list[dict] = []
    steps_log: list[dict] = []
    step = 0
    steps_per_epoch = len(batches)
    model.train()
    for epoch in range(1, spec.epochs + 1):
        _notify(observer, "on_epoch_start", epoch, spec.epochs, steps_per_epoch)
        sums: dict[str, torch.Tensor] = {}
        window: dict[str, torch.Tensor] = {}
        window_n = 0
        seen = 0
        started = time.perf_counter()
        for i, (images_u8, cond) in enumerate(batches.epoch(epoch), start=1):
            images = images_u8.float().div_(255)
            if device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            with _autocast(device, precision):
                output = step_model(images, cond)
                result = loss_fn(output, images)
            optimizer.zero_grad(set_to_none=True)
            result.total.backward()
            optimizer.step()
            step += 1
            n = images.shape[0]
            seen += n
            window_n += n
            for key, value in {"loss": result.total, **result.terms}.items():
                value = value.detach().float() * n
                sums[key] = sums.get(key, 0) + value
                window[key] = window.get(key, 0) + value
            metrics = None
            if i % spec.log_every == 0 or i == steps_per_epoch:
                metrics = {k: float(v) / window_n for k, v in window.items()}
                if not all(math.isfinite(v) for v in metrics.values()):
                    raise GenkitRuntimeError(
                        f"the loss became {metrics['loss']} at step {step} (epoch {epoch}); "
                        f"the last good weights are in {out / WEIGHTS_FILE}. Try a lower --lr (now {spec.lr})")
                metrics["images_per_s"] = seen / (time.perf_counter() - started)
                steps_log.append({"step": step, "epoch_float": epoch - 1 + i / steps_per_epoch, **metrics})
                window, window_n = {}, 0
            _notify(observer, "on_step", epoch, i, metrics)
        seconds = time.perf_counter() - started
        record: dict[str, Any] = {"epoch": epoch, "step": step}
        record.update({f"train_{k}": float(v) / seen for k, v in sums.items()})
        record.update({f"val_{k}": v for k, v in
                       evaluate_loss(model, loss_fn, valid_set, device, spec.batch_size, precision).items()})
        record["images_per_s"] = seen / seconds
        record["seconds"] = round(seconds, 3)
        epochs_log.append(record)

        save_weights(model, out / WEIGHTS_FILE)
        model.eval()
        with torch.no_grad():
            save_grid(model.sample(grid_cond, z=grid_z), out / "samples" / f"epoch_{epoch:03d}.png", nrow=GRID_COLS)
        model.train()
        _append_jsonl(out / "metrics.jsonl", record)
        write_text_atomic(out / "steps.jsonl", "".join(json.dumps(s) + "\n" for s in steps_log))
        plot_curves(epochs_log, steps_log, out / "loss_curve.png")
        _notify(observer, "on_epoch_end", epoch, record)

    model.eval()
    return Run(out, config, model, conditioner, loss_fn, device)


def _append_jsonl(path: Path, record: dict) -> None:
    lines = path.read_text() if path.exists() else ""
    write_text_atomic(path, lines + json.dumps(record) + "\n")


def _maybe_compile(model, enabled: bool, observer):
    if not enabled:
        return model
    try:
        return torch.compile(model)
    except Exception as exc:  # no compiler backend on this platform
        _notify(observer, "on_message", f"warning: torch.compile is unavailable ({exc}); running eagerly")
        return model
