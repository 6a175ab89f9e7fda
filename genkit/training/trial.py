"""One training step tried before anything is written: does the model train with this loss?

genkit never looks inside a model's training output; only its loss does. So the pair is tried
once, on PyTorch's meta device (shapes, no memory): a loss that reads a field the model's output
lacks (``AttributeError``, ``KeyError``), is called wrongly (``TypeError``) or gets tensors of
the wrong shape cannot train it. A model or loss that owns its training step is tried the same
way: its optimizers are built and checked (every trainable parameter in one), and its
``training_step`` runs once with updates that only record their optimizer's name. A component's
own refusal (a ``UsageError`` or ``ValueError`` it raises) is shown as the one-line refusal it
is. Where the meta device cannot tell, the step is tried for real on two blank images on the CPU.
"""

from __future__ import annotations

from typing import Any

import torch

from genkit.components.build import dry_batch, make_components, short_reason
from genkit.components.loading import registry
from genkit.config import RunConfig
from genkit.errors import UsageError
from genkit.runtime.distributed import World
from genkit.store.weights import loss_parameters
from genkit.training.step import TrainingStep, owned_optimizers, step_owner


class _Undecided(Exception):
    """The meta device cannot tell (an operation it has no kernel for, a value read back)."""


class _TrialStep(TrainingStep):
    """Updates that check the optimizer's name and nothing else: no backward pass, no step."""

    def update(self, name: str, loss: torch.Tensor) -> None:
        if name not in self.optimizers:
            raise KeyError(f"step.update({name!r}) names no optimizer; the optimizers are "
                           f"{', '.join(map(repr, self.optimizers))}")
        self.updated.add(name)


def check_pairing(config: RunConfig) -> None:
    """Refuse a loss that cannot train the model, or a step that cannot run, before anything is written."""
    try:
        reason = _try_step(config, meta=True)
    except _Undecided:
        reason = _try_step(config, meta=False)
    if reason is None:
        return
    model, loss = config.model.name, config.loss.name
    own = registry("models").get(model).default_loss
    advice = (f"train it with --loss {own} (its own loss)" if own and own != loss
              else "choose a loss written for this model (see `genkit plugins`)")
    raise UsageError(f"loss {loss!r} cannot train model {model!r}: {reason}; {advice}")


def _try_step(config: RunConfig, meta: bool) -> str | None:
    """Why the model's training step and the loss do not fit together, or None when they do."""
    device = torch.device("meta" if meta else "cpu")
    with torch.random.fork_rng(devices=[]), torch.device(device):
        try:
            conditioner, model, loss = make_components(config)
        except UsageError:
            raise
        except Exception:
            if meta:
                raise _Undecided from None
            return None  # the factory fails for another reason: the real build reports it
        images, condition = dry_batch(conditioner, config, 2)
        owner = step_owner(model, loss)
        if owner is not None:
            return _try_owned_step(config, owner, model, loss, images, condition, meta)
        try:
            with torch.no_grad():
                output = model(images, condition)
        except AttributeError as exc:
            raise UsageError(f"model {config.model.name!r} cannot run with conditioner {config.conditioner.name!r}: "
                             f"{short_reason(exc)}; choose a --conditioner that offers it") from None
        except (UsageError, ValueError) as exc:
            _refusal(exc, "model", config.model.name, meta)
        except Exception as exc:
            _undecided(exc, meta)
            return None  # the model's own failure, not a question of fit: training reports it
        try:
            with torch.no_grad():
                loss(output, images)
        except (UsageError, ValueError) as exc:
            _refusal(exc, "loss", config.loss.name, meta)
        except (AttributeError, KeyError, TypeError, IndexError) as exc:
            return short_reason(exc)
        except Exception as exc:
            _undecided(exc, meta)
            # a shape mismatch is a question of fit; anything else (a value refused) training reports
            return short_reason(exc) if isinstance(exc, RuntimeError) else None
    return None


def _try_owned_step(config: RunConfig, owner: tuple[str, Any], model: Any, loss: Any, images: torch.Tensor,
                    condition: torch.Tensor, meta: bool) -> str | None:
    """The component's optimizers (checked) and one run of its ``training_step``; what fails is the step's
    own fault (its plugin's to fix), so it is refused here, naming the step rather than the pairing."""
    kind, component = owner
    name = getattr(config, kind).name
    try:
        optimizers = owned_optimizers(owner, model, config.train.lr, loss_parameters(loss))
    except UsageError as exc:
        raise UsageError(f"{kind} {name!r} cannot be trained: {exc}") from None
    except ValueError as exc:  # torch.optim's own checks: a negative rate, betas outside [0, 1)
        _refusal(exc, kind, name, meta)
    except Exception as exc:
        _undecided(exc, meta)
        return None  # the component's own failure: training reports it
    step = _TrialStep(optimizers, World(), {}, model=model, loss=loss)
    try:
        result = component.training_step(images, condition, step)
    except (UsageError, ValueError) as exc:
        _refusal(exc, kind, name, meta)
    except (AttributeError, KeyError, TypeError, IndexError) as exc:
        _step_fails(config, kind, short_reason(exc))
    except Exception as exc:
        _undecided(exc, meta)
        if isinstance(exc, RuntimeError):
            _step_fails(config, kind, short_reason(exc))
        return None
    if not isinstance(getattr(result, "total", None), torch.Tensor) or not isinstance(getattr(result, "terms", {}),
                                                                                      dict):
        _step_fails(config, kind, f"it returned {type(result).__name__}, not a genkit.LossResult (total and terms)")
    if not step.updated:
        _step_fails(config, kind, "it called step.update for none of its optimizers, so nothing would train")
    return None


def _step_fails(config: RunConfig, kind: str, reason: str) -> None:
    """The refusal of an owned step that cannot run: the step named; another loss suggested if it is not the
    model's own."""
    own = registry("models").get(config.model.name).default_loss
    loss = config.loss.name
    advice = f"; or train it with --loss {own} (its own loss)" if own and own != loss else ""
    other = f"model {config.model.name!r}" if kind == "loss" else f"loss {loss!r}"
    raise UsageError(f"the training step of {kind} {getattr(config, kind).name!r} cannot run with {other}: "
                     f"{reason}{advice}")


def _refusal(exc: Exception, kind: str, name: str, meta: bool) -> None:
    """A component's own refusal, as one line; a ValueError on the meta device is retried for real first
    (it may come from a value the meta device does not have)."""
    if isinstance(exc, UsageError):
        raise exc
    if meta:
        raise _Undecided from None
    raise UsageError(f"{kind} {name!r} refused this run: {' '.join(str(exc).split())[:200] or 'ValueError'}") from None


def _undecided(exc: Exception, meta: bool) -> None:
    """On the meta device, an operation it cannot run (no kernel, a value read back) decides nothing."""
    if meta and (isinstance(exc, NotImplementedError) or "meta" in str(exc).lower()):
        raise _Undecided from None
