"""Build the conditioner, model and loss a config describes, through the registries.

Before a model is allocated, it is built once on PyTorch's ``meta`` device (shapes, no memory)
to count what it will need; a model that cannot fit in the memory available is refused with one
line (see :mod:`genkit.runtime.memory`), instead of the process dying while allocating it.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from genkit.components.loading import registry
from genkit.components.registry import SINGULAR
from genkit.config import ComponentSpec, RunConfig
from genkit.errors import UsageError
from genkit.runtime.memory import require_memory

#: bytes per parameter: the weights alone (sampling), and weights + gradients + Adam's two moments (training)
INFERENCE_BYTES_PER_PARAMETER = 4
TRAINING_BYTES_PER_PARAMETER = 16


#: what each kind's factory gets by position, before the user's options
POSITIONAL_ARGS = {"datasets": (), "conditioners": ("attribute_names",), "models": ("image_shape", "conditioner"),
                   "losses": (), "classifiers": ("image_shape", "attribute_names")}


def resolve(kind: str, spec: ComponentSpec) -> ComponentSpec:
    """The same spec with every option the factory accepts filled in (checks names and options).

    Options are normalised through JSON (tuples become lists), so a config equals itself after a
    round trip through ``config.json``.
    """
    component = registry(kind).get(spec.name)
    options = component.resolve_options(spec.options, skip=POSITIONAL_ARGS[kind])
    return ComponentSpec(spec.name, json_options(options, spec.name))


def json_options(options: dict[str, Any], owner: str) -> dict[str, Any]:
    """``options`` as they read back from JSON; an error naming ``owner`` if they cannot be stored."""
    try:
        return json.loads(json.dumps(options))
    except (TypeError, ValueError):
        raise UsageError(f"{owner!r} has options that cannot be stored in config.json: {options}") from None


def build_components(config: RunConfig, bytes_per_parameter: int = INFERENCE_BYTES_PER_PARAMETER
                     ) -> tuple[Any, Any, Any]:
    """``(conditioner, model, loss)`` for ``config``; the model is freshly initialised.

    Options are checked first (an unknown one, or one of the wrong type, is a :class:`UsageError`
    naming the component), then the model's size is checked against the memory available.
    """
    check_options(config)
    model_fits(config, bytes_per_parameter=bytes_per_parameter)
    return make_components(config)


def check_options(config: RunConfig) -> None:
    """Every component's options are ones its factory accepts, each of the right type."""
    for kind, spec in (("conditioners", config.conditioner), ("models", config.model), ("losses", config.loss)):
        registry(kind).get(spec.name).resolve_options(spec.options, skip=POSITIONAL_ARGS[kind])


def make_components(config: RunConfig) -> tuple[Any, Any, Any]:
    """The conditioner, model and loss, built on the current default device, unchecked."""
    conditioner = _make("conditioners", config.conditioner, list(config.data.attribute_names))
    model = _make("models", config.model, config.image_shape, conditioner)
    loss = _make("losses", config.loss)
    return conditioner, model, loss


def _make(kind: str, spec: ComponentSpec, *args: Any) -> Any:
    component = registry(kind).get(spec.name)
    try:
        return component.create(*args, **spec.options)
    except UsageError:
        raise
    except (TypeError, ValueError) as exc:  # a value the factory cannot take, e.g. a list of the wrong length
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UsageError(f"{SINGULAR[kind]} {spec.name!r} cannot be built from its options "
                         f"{json.dumps(spec.options)[:200]} ({reason})") from None
    except AttributeError as exc:  # a model asking its conditioner for a form it does not offer
        if kind != "models":
            raise
        raise UsageError(f"model {spec.name!r} cannot be built with conditioner {type(args[1]).__name__}: "
                         f"{short_reason(exc)}; choose a --conditioner that offers it") from None


def model_fits(config: RunConfig, bytes_per_parameter: int, batch_size: int = 0) -> int | None:
    """Refuse a model (and a training batch of ``batch_size``) that cannot fit in memory; returns the
    bytes estimated, or None when the model cannot be sized without building it.

    The model is built on the ``meta`` device; with ``batch_size`` one image is also passed
    through it there, and every module's output counts twice per image (kept for the backward
    pass, and its gradient).
    """
    try:
        with torch.device("meta"), ValuesUnwritten():
            conditioner, model, _ = make_components(config)
            parameters = sum(p.numel() * p.element_size() for p in model.parameters())
            parameters += sum(b.numel() * b.element_size() for b in model.buffers())
            per_image = _activation_bytes(model, conditioner, config) if batch_size else 0
    except UsageError:
        raise
    except Exception:  # a factory that cannot run on the meta device: it is built for real, unchecked
        return None
    needed = parameters // 4 * bytes_per_parameter + batch_size * per_image
    height, width = config.data.image_size
    what = (f"the {config.model.name!r} model at image size {height}x{width} "
            f"({parameters // 4:,} parameters{f', batch {batch_size}' if batch_size else ''})")
    require_memory(needed, what, "choose a smaller --image-size" + (" or --batch-size" if batch_size else "") +
                   " (or a smaller model)")
    return needed


class ValuesUnwritten(TorchFunctionMode):
    """On the meta device, in-place ops that only write values (the initialisers' ``normal_``, ``uniform_``,
    ``zero_``, ...) are skipped: a meta tensor has no values, and PyTorch runs its random fills there
    through decompositions that import ``torch._dynamo`` (1.3 s of CPU measured, against 5 ms, at every
    ``load_run``: ``genkit sample``, ``edit``, ``serve`` start-up). Shapes and dtypes stay exact."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in VALUE_ONLY_OPS and args and isinstance(args[0], torch.Tensor) \
                and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


#: in-place tensor methods that write values and change no shape, dtype or device
VALUE_ONLY_OPS = frozenset({"normal_", "uniform_", "zero_", "fill_", "copy_", "exponential_", "geometric_",
                            "log_normal_", "cauchy_", "random_", "bernoulli_", "erfinv_", "clamp_", "mul_", "add_",
                            "sub_", "div_", "fill_diagonal_"})


def _activation_bytes(model: torch.nn.Module, conditioner: Any, config: RunConfig) -> int:
    total = 0

    def count(module, inputs, output):
        nonlocal total
        for tensor in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(tensor, torch.Tensor):
                total += 2 * tensor.numel() * tensor.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        images, condition = dry_batch(conditioner, config, 1)
        model(images, condition)
    except Exception:
        return 2 * 4 * math.prod(config.image_shape)
    finally:
        for hook in hooks:
            hook.remove()
    return total



def dry_batch(conditioner: Any, config: RunConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` blank images and conditions of the run's shapes (on the current default device)."""
    return torch.zeros(n, *config.image_shape), torch.zeros(n, int(getattr(conditioner, "dim", 0)) or
                                                            len(config.data.attribute_names))


def short_reason(exc: Exception) -> str:
    """An exception as ``Type: text`` in at most about 160 characters."""
    text = " ".join(str(exc).split())
    if len(text) > 160:
        text = text[:160] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def model_outline(config: RunConfig) -> Any:
    """The model ``config`` describes, built on the meta device (no memory, no weights): enough to read
    what it declares (its noise shape, sampling options, capabilities), e.g. for ``--help``."""
    check_options(config)
    with torch.device("meta"), ValuesUnwritten():
        return make_components(config)[1]
