"""The pieces of the training loop: what it reports to observers, where it stands, one logging window,
the optimizer, precision and compilation."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from genkit.config import RunConfig, TrainSpec
from genkit.errors import GenkitRuntimeError
from genkit.training.checkpoints import latest_checkpoint
from genkit.training.epoch_grids import GRID_COLS
from genkit_datasets.torch_dataset import CachedImageDataset


class Observer(Protocol):
    """What the training loop reports; the CLI draws it with rich. Every method is optional.

    ``on_step`` gets ``None`` between logged steps, and at a logged step its ``steps.jsonl`` record:
    ``step``, ``epoch_float``, every loss term averaged over the window, ``images_per_s`` and
    ``data_wait_s``. ``on_epoch_end``'s record holds the
    epoch's metrics and, when the loss reported any through its optional ``warnings()``, a list
    of messages under ``"warnings"`` to show with them. The loop also sends ``on_train_start(state)``
    and ``on_checkpoint(state)`` (a :class:`LoopState`), which the run folder's writers
    (:mod:`genkit.training.observers`) use; an observer may ignore them.
    """

    def on_message(self, text: str) -> None: ...
    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...
    def on_step(self, epoch: int, step: int, metrics: dict[str, float] | None) -> None: ...
    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None: ...


def notify(observer, method: str, *args) -> None:
    """Call ``observer.method(*args)`` if the observer has that method (every method is optional)."""
    fn = getattr(observer, method, None) if observer is not None else None
    if fn is not None:
        fn(*args)


class Observers:
    """Several observers as one: each event goes to each of them, in order."""

    def __init__(self, *observers):
        self.observers = [o for o in observers if o is not None]

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args: [notify(o, method, *args) for o in self.observers]


@dataclass
class LoopState:
    """Where the loop stands: what a checkpoint saves besides the weights and the optimizer."""

    epoch: int = 1
    batch_in_epoch: int = 0
    step: int = 0
    #: this epoch's loss terms summed over its logged windows, and the images they cover
    sums: dict[str, float] = field(default_factory=dict)
    seen: int = 0
    epochs_log: list[dict] = field(default_factory=list)
    steps_log: list[dict] = field(default_factory=list)
    #: samples per row of the epoch grids, chosen once from what a sample costs (kept on resume)
    grid_cols: int = GRID_COLS


class Window:
    """The steps since the last logged one: loss terms summed on the device, and the first
    non-finite step, so the host needs no sync until the window is logged."""

    def __init__(self, device: torch.device, step: int):
        self.sums: dict[str, torch.Tensor] = {}
        self.images = 0
        self.first_bad = torch.tensor(-1, device=device)
        self.counter = torch.tensor(step, device=device)
        self.started = time.perf_counter()

    def add(self, result, images: int, bad_update: torch.Tensor | None = None) -> None:
        """One step's result; ``bad_update``: whether any of its optimizer updates had a non-finite loss."""
        self.images += images
        for key, value in {"loss": result.total, **result.terms}.items():
            self.sums[key] = self.sums.get(key, 0) + value.detach().float() * images
        self.counter += 1
        bad = ~torch.isfinite(result.total.detach())
        if bad_update is not None:
            bad = bad | bad_update
        self.first_bad = torch.where(bad & (self.first_bad < 0), self.counter, self.first_bad)

    def bad_step(self) -> int:
        """The first non-finite step of the window, or -1 (a host sync)."""
        return int(self.first_bad.item())


@torch.no_grad()
def evaluate_loss(model, validate: Callable[[torch.Tensor, torch.Tensor], Any], dataset: CachedImageDataset,
                  device: torch.device, batch_size: int, precision: str = "fp32") -> dict[str, float]:
    """Mean terms per image of ``validate(images, condition) -> LossResult`` over a whole split, with
    ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = 0
    for start in range(0, len(dataset), batch_size):
        images_u8, cond = dataset.read_uint8(range(start, min(start + batch_size, len(dataset))))
        images, cond = images_u8.to(device).float().div_(255), cond.to(device)
        with autocast(device, precision):
            result = validate(images, cond)
        n = images.shape[0]
        for key, value in {"loss": result.total, **result.terms}.items():
            sums[key] = sums.get(key, 0) + value.detach().float() * n
        count += n
    model.train(was_training)
    return {k: float(v) / count for k, v in sums.items()}


def make_optimizer(model: torch.nn.Module, lr: float, extra: list[torch.nn.Parameter] = ()) -> torch.optim.Optimizer:
    """Adam, as in the paper, with the fused kernel (one pass over all parameters): on small
    models at small batches the per-tensor Adam loop is a large share of the step on a CPU.
    ``extra`` are parameters outside the model trained with it (a loss's own, e.g. a learned σ)."""
    return torch.optim.Adam([*model.parameters(), *extra], lr=lr, fused=True)


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


def effective_precision(precision: str, device: torch.device, observer) -> str:
    if precision == "bf16" and not (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        notify(observer, "on_message", f"warning: bf16 is not supported on {device.type} here; training in fp32 instead")
        return "fp32"
    return precision


def compile_model(model, observer):
    """torch.compile, checked once; without a working compiler, a warning and eager mode."""
    try:
        import torch._dynamo  # noqa: F401

        return torch.compile(model)
    except Exception as exc:
        notify(observer, "on_message", f"warning: torch.compile is unavailable ({exc}); running eagerly")
        return model


def divergence(bad_step: int, config: RunConfig, out: Path, epoch: int, updates_within_step: bool = False
               ) -> GenkitRuntimeError:
    """The error that ends a run whose loss became non-finite at ``bad_step``: the last finite checkpoint
    and the ``--resume`` line that continues from it more gently. At step 1 of the bundled step no rate was
    involved yet, so the advice is about options; a step that updates several times (``updates_within_step``)
    may have diverged from its own first update."""
    if bad_step == 1 and not updates_within_step:  # the first forward pass, on the initial weights
        loss, model = config.loss, config.model
        return GenkitRuntimeError(
            f"the loss was non-finite at step 1, on the initial weights before any update, so a lower --lr "
            f"cannot help: check the options of loss {loss.name!r} ({json.dumps(loss.options)}) and model "
            f"{model.name!r} ({json.dumps(model.options)}), and start a new run with other values")
    lr = config.train.lr
    gentler = min(lr / 10, TrainSpec().lr)  # a tenth, and never above the default rate
    checkpoint = latest_checkpoint(out)
    kept = f"the last finite checkpoint is {checkpoint}" if checkpoint else "no checkpoint was written"
    return GenkitRuntimeError(
        f"the loss became non-finite at step {bad_step} (epoch {epoch}); {kept}. Resume from it with "
        f"a lower --lr (now {lr:g}): `genkit train --resume {out} --lr {gentler:g}`")
