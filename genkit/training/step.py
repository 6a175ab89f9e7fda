"""One training step: the bundled one (forward, loss, one Adam), or a model's or loss's own.

A component owns its step when it defines both methods (found like any capability, see
docs/hooks.md, "A model that owns its training step")::

    def optimizers(self, lr: float, model) -> dict[str, torch.optim.Optimizer]: ...
    def training_step(self, images, condition, step: genkit.TrainingStep) -> genkit.LossResult: ...

The model is asked first, then the loss. ``optimizers`` is called once, with ``--lr`` and the
model being trained; every trainable parameter must belong to one of them. ``training_step``
calls ``step.update(name, loss)`` once per optimizer update it makes (any number per batch);
genkit does the rest: zeroing, the backward pass, averaging the gradients over torchrun's
processes, the optimizer's step, the non-finite check of every update, checkpoints of every
optimizer. The step's :class:`LossResult` is what is logged. Optional beside them:

* ``validation_step(images, condition, step) -> LossResult``: the validation figure (``val_*``
  in metrics.jsonl), run without gradients on the model that samples (``step.model``: the weight
  average under ``--ema``); without it, a run of the owned step reports no validation terms.
* ``headline``: the term (a key of the result's ``terms``, or ``"loss"`` for ``total``) that
  ``genkit runs`` shows as the run's validation figure.
* ``training_only``: the names of submodules used only in training (a discriminator, a teacher):
  kept in checkpoints, left out of the run folder's weights and of the weight average.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from genkit.errors import GenkitRuntimeError, UsageError
from genkit.runtime.distributed import World
from genkit.types import LossResult

#: the optimizer of the bundled step (model and loss parameters, Adam at ``--lr``)
BUNDLED_OPTIMIZER = "model"
OWNED_STEP_METHODS = ("optimizers", "training_step")


def step_owner(model: Any, loss: Any) -> tuple[str, Any] | None:
    """``("model", model)`` or ``("loss", loss)`` when one of them owns its training step, else None."""
    for kind, component in (("model", model), ("loss", loss)):
        if all(callable(getattr(component, method, None)) for method in OWNED_STEP_METHODS):
            return kind, component
    return None


def headline(model: Any, loss: Any) -> str:
    """The term ``genkit runs`` shows for a run: the model's or the loss's ``headline``, else the total."""
    for component in (model, loss):
        name = getattr(component, "headline", None)
        if isinstance(name, str) and name:
            return name
    return "loss"


def owned_optimizers(owner: tuple[str, Any], model: torch.nn.Module, lr: float, extra: list[torch.nn.Parameter],
                     ) -> dict[str, torch.optim.Optimizer]:
    """The owner's optimizers, checked: a mapping of names to optimizers that together train every
    trainable parameter of the model and the loss (``extra``), each exactly once."""
    kind, component = owner
    what = f"{kind} {type(component).__name__}"
    made = component.optimizers(lr, model)
    if not isinstance(made, Mapping) or not made or not all(
            isinstance(k, str) and isinstance(v, torch.optim.Optimizer) for k, v in made.items()):
        raise UsageError(f"{what}.optimizers(lr, model) returned {type(made).__name__}, not a dict of names to "
                         "torch.optim optimizers; its plugin must return e.g. {'generator': Adam(...)}")
    owner_of: dict[int, str] = {}
    for name, optimizer in made.items():
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) in owner_of:
                    raise UsageError(f"{what}.optimizers: a parameter is in both {owner_of[id(p)]!r} and {name!r}; "
                                     "its plugin must give each parameter to one optimizer")
                owner_of[id(p)] = name
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad] + \
                [(f"loss.{i}", p) for i, p in enumerate(extra) if p.requires_grad]
    forgotten = [n for n, p in trainable if id(p) not in owner_of]
    if forgotten:
        more = f" and {len(forgotten) - 3} more" if len(forgotten) > 3 else ""
        raise UsageError(f"{what}.optimizers leaves {len(forgotten)} trainable parameters to no optimizer "
                         f"({', '.join(forgotten[:3])}{more}), so they would never train nor be checkpointed; "
                         "its plugin must add them to an optimizer, or freeze them with requires_grad_(False)")
    return dict(made)


class TrainingStep:
    """What a training step is handed: ``update(name, loss)`` steps optimizer ``name`` on ``loss``.

    ``number`` is the count of steps done before this one (0 at the first); ``model`` the model
    being trained and ``loss`` the run's loss, for a step that needs the other component.
    """

    def __init__(self, optimizers: Mapping[str, torch.optim.Optimizer], world: World,
                 averaged_by_hand: Mapping[str, list[torch.nn.Parameter]], model: Any = None, loss: Any = None,
                 grad_clip: float = 0.0):
        self.optimizers = dict(optimizers)
        self.grad_clip = float(grad_clip)  # the global norm each update's gradients are clipped to (0: not)
        self.world = world
        self._by_hand = averaged_by_hand  # per optimizer: the parameters whose gradients DDP does not average
        self.model, self.loss = model, loss
        self.number = 0
        self.bad: torch.Tensor | None = None  # any update of this step on a non-finite loss (on the device)
        self.updated: set[str] = set()

    def begin(self, number: int) -> None:
        self.number, self.bad, self.updated = number, None, set()

    def update(self, name: str, loss: torch.Tensor) -> None:
        """Zero optimizer ``name``'s gradients, backpropagate ``loss``, average the gradients over
        torchrun's processes, clip their global norm (``--grad-clip``) and take the optimizer's step."""
        optimizer = self.optimizers.get(name)
        if optimizer is None:
            raise GenkitRuntimeError(f"step.update({name!r}): no optimizer of that name; the optimizers are "
                                     f"{', '.join(map(repr, self.optimizers))}")
        bad = ~torch.isfinite(loss.detach())
        self.bad = bad if self.bad is None else self.bad | bad
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=loss.device.type, enabled=False):  # the loop's autocast is for forwards
            loss.backward()
            if self.world.distributed:
                _average_gradients(self._by_hand.get(name, ()), self.world.size)
            if self.grad_clip:  # after averaging, so every process clips the same gradients the same way
                torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]],
                                               self.grad_clip)
            optimizer.step()
        # autocast keeps low-precision copies of the weights until its region ends: a forward after this
        # update, in the same step, must see the updated weights
        torch.clear_autocast_cache()
        self.updated.add(name)


class ValidationStep(TrainingStep):
    """What ``validation_step`` is handed: ``model`` (the model that samples) and ``loss``; no updates."""

    def __init__(self, world: World, model: Any, loss: Any):
        super().__init__({}, world, {}, model=model, loss=loss)

    def update(self, name: str, loss: torch.Tensor) -> None:
        raise GenkitRuntimeError(f"step.update({name!r}) was called in validation_step, which runs without "
                                 "gradients; update only in training_step")


def validation(owner: tuple[str, Any] | None, sampling_model: Any, loss: Any, world: World,
               ) -> Callable[[torch.Tensor, torch.Tensor], LossResult] | None:
    """``validate(images, condition) -> LossResult`` on the model that samples: the bundled step's loss,
    or the owner's ``validation_step``; None for an owned step without one (no validation figure)."""
    if owner is None:
        return lambda images, condition: loss(sampling_model(images, condition), images)
    kind, component = owner
    own = sampling_model if kind == "model" else component  # a model's method runs on the averaged copy
    if not callable(getattr(own, "validation_step", None)):
        return None
    step = ValidationStep(world, model=sampling_model, loss=loss)
    return lambda images, condition: own.validation_step(images, condition, step)


def restore_optimizers(optimizers: Mapping[str, torch.optim.Optimizer], saved: dict[str, Any],
                       checkpoint: Path) -> None:
    """Every optimizer's state from a checkpoint's ``saved`` state, by name. The learning rates stay as
    ``optimizers`` were built from the config's ``--lr`` (a resume may lower it), not the saved ones."""
    states = saved.get("optimizers")
    if states is None and "optimizer" in saved:  # a checkpoint written before optimizers had names
        states = {BUNDLED_OPTIMIZER: saved["optimizer"]}
    states = states if isinstance(states, dict) else {}
    if set(states) != set(optimizers):
        held = ", ".join(sorted(states)) or "none"
        raise UsageError(f"{checkpoint} holds the state of optimizers {held}, and this run trains with "
                         f"{', '.join(sorted(optimizers))}; the model or loss changed since it was written: "
                         "resume with the code that wrote it, or start a new run")
    for name, optimizer in optimizers.items():
        built = [group["lr"] for group in optimizer.param_groups]
        optimizer.load_state_dict(states[name])
        for group, lr in zip(optimizer.param_groups, built):
            group["lr"] = lr


def _average_gradients(params, world_size: int) -> None:
    """The mean of each gradient over the processes (gradients DDP does not see), one all-reduce per dtype.

    A parameter without a gradient on some process counts as a zero there; one without a gradient on
    every process keeps none (so its optimizer skips it, as it would in one process). Every process
    must make the same updates in the same order, as with DDP."""
    params = list(params)
    if not params:
        return
    device = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    torch.distributed.all_reduce(has)
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p, anywhere in zip(params, has.tolist()):
        if anywhere:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for same in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in same])
        torch.distributed.all_reduce(flat)
        flat.div_(world_size)
        offset = 0
        for g in same:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def bundled_step(forward_loss: Callable[[torch.Tensor, torch.Tensor], LossResult]):
    """The bundled step: the model's forward, the loss, one update of the one optimizer."""

    def step_fn(images: torch.Tensor, condition: torch.Tensor, step: TrainingStep) -> LossResult:
        result = forward_loss(images, condition)
        step.update(BUNDLED_OPTIMIZER, result.total)
        return result

    return step_fn
