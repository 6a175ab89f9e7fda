"""What a model can do: discovered from the model, never assumed.

Every model can be trained (``forward``, whatever its loss reads) and can sample
(``sample(condition, noise, generator=None, **options)``) from noise of the shape it declares
(``noise_shape``). Everything else is a capability the model may have, found by the methods it
defines:

* ``posterior``: ``encode(images, condition) -> (mu, logvar)``, a diagonal Gaussian
  q(z|x, y), and ``decode(z, condition) -> images``; the prior p(z|y) is N(0, I) unless the
  model also defines ``prior_params(condition) -> (mu, logvar)``, a conditional one. It gives
  the likelihood bounds of ``genkit evaluate``, ``genkit reconstruct``, the sweep's Figure 4 and
  editing by encoding.
* ``invert``: ``invert(images, condition, **options) -> noise``, the noise that ``sample`` with
  the same options maps back to the images (a deterministic sampler run backwards); it gives
  reconstruction and editing to a model without a posterior.
* ``partial_invert``: ``invert_partway(images, condition, depth, **options) -> latent`` and
  ``sample_partway(latent, condition, depth, **options) -> images``, the same inversion and sampler
  over only the last ``depth`` (0 < depth ≤ 1) of the path: the latent is the sampler's state at time
  1 − depth (0 the noise, 1 the image), and depth 1 is ``invert``/``sample`` exactly. It gives edits
  that keep more of the image (``--edit-depth``): what the path decides before 1 − depth is kept.
* ``log_likelihood``: ``log_likelihood(images, condition, generator=None) -> Tensor (B,)``,
  the model's own log-likelihood of images in [0, 1] (or a lower bound of it), in nats per image.

One capability is what the model was *trained* for, which no method shows, so the model declares it:

* ``partial_conditions``: ``partial_conditions`` is ``True`` (an attribute or a property) when the
  model reads conditions with attributes left unspecified (the conditioner's ``encode_partial``),
  because it was trained with them left out (the conditioner's ``drop``). It gives
  ``rest="model"``: the attributes a user did not name are left to the model.

A capability a model lacks is reported as absent: the metrics that need it are ``null``, the
commands that need it say so in one line.

A model may also declare what sampling costs, which no method's presence tells:

* ``sampling_cost(condition, **options) -> (passes, width)``: the network passes sampling the rows
  of ``condition`` with ``options`` takes (a pass: one sample's row through the network once; summed
  over every row and evaluation) and ``width``, the most rows one sample puts into a single network
  call (two under classifier-free guidance). ``genkit serve`` refuses a view costing more than it
  allows and splits its calls by it (:func:`sampling_cost`); without it, a model keeps the page's
  plain bounds.

Sampling options are the keyword parameters of ``sample`` after the condition and the noise (and
other than ``generator``) that have defaults: their type is the annotation's (``Literal[...]``
lists the choices) or the default's, their help the ``:param name:`` line of ``sample``'s
docstring. Each becomes a flag of ``genkit sample``/``evaluate``/``serve``, ``--name`` or what
the model's ``sampling_flags`` mapping says (``{"steps": "--sampling-steps"}``), a control on
the page, a keyword of ``Run.sample`` and a ``--vary sample.NAME`` of ``genkit sweep``. A model
may check their ranges in ``check_sampling_options(**options)`` (raise ``genkit.UsageError``);
genkit itself checks types, choices and that numbers are finite, before any sampling work.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import torch

from genkit.errors import PluginError, UsageError, shown
from genkit.options import SAMPLING, SCALARS, Option, convert, signature_options

#: capability -> the methods that make it up
CAPABILITIES = {
    "posterior": ("encode", "decode"),
    "invert": ("invert",),
    "partial_invert": ("invert_partway", "sample_partway"),
    "log_likelihood": ("log_likelihood",),
}
#: capabilities a model declares by an attribute of the capability's name that is ``True``
DECLARED = ("partial_conditions",)
#: ``sample``'s parameters that are not sampling options (the first two are taken by position)
GENERATOR = "generator"


def has(model: Any, capability: str) -> bool:
    """Whether ``model`` defines every method of ``capability`` (see :data:`CAPABILITIES`), or declares it
    (:data:`DECLARED`)."""
    if capability in DECLARED:
        return getattr(model, capability, False) is True
    return all(callable(getattr(model, method, None)) for method in CAPABILITIES[capability])


def capabilities(model: Any) -> dict[str, bool]:
    """Every capability and whether the model has it: ``{"posterior": True, "invert": False, ...}``."""
    return {name: has(model, name) for name in (*CAPABILITIES, *DECLARED)}


def noise_shape(model: Any) -> tuple[int, ...]:
    """The shape of one sample's noise, as the model declares it (``noise_shape``).

    A model written for genkit 0.1, which declared only ``latent_dim``, samples from a vector
    of that length.
    """
    declared = getattr(model, "noise_shape", None)
    if declared is None and isinstance(getattr(model, "latent_dim", None), int):
        declared = (model.latent_dim,)
    try:
        shape = tuple(int(s) for s in declared)
    except (TypeError, ValueError):
        raise PluginError(_owner(model), f"model {type(model).__name__} declares noise_shape {declared!r}; it must be "
                                         "a tuple of positive sizes, such as (32,) or (3, 64, 64)") from None
    if not shape or any(s < 1 for s in shape):
        raise PluginError(_owner(model), f"model {type(model).__name__} declares noise_shape {shape}; every size "
                                         "must be positive")
    return shape


def draw_noise(model: Any, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws of the model's noise from N(0, I), on the CPU, from ``generator``."""
    return torch.randn(n, *noise_shape(model), generator=generator)


#: one option of a model's ``sample``: its flag, default, type, choices, bounds and help
SamplingOption = Option


def sampling_options(model: Any) -> dict[str, SamplingOption]:
    """The sampling options ``model.sample`` declares, by name, in signature order."""
    sample = getattr(model, "sample", None)
    if not callable(sample):
        raise PluginError(_owner(model), f"model {type(model).__name__} has no sample(condition, noise) method")
    try:
        parameters = list(inspect.signature(sample).parameters.values())
    except (TypeError, ValueError):
        return {}
    renamed = dict(getattr(model, "sampling_flags", {}) or {})
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:2]
    options = [p for p in parameters if p not in positional and p.name != GENERATOR
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    for param in options:
        if param.default is param.empty:
            raise PluginError(_owner(model), f"model {type(model).__name__}'s sample() has the parameter "
                                             f"{param.name!r} without a default; sampling options need one")

    def describe(param, types, choices, bounds, help):
        kind = types[0] if types and len(types) == 1 and types[0] in SCALARS else None
        if kind is None:  # several types, a list, a class: the default's, else text
            kind = type(param.default) if isinstance(param.default, SCALARS) else str
        return Option(param.name, (kind,), param.default, choices, bounds, help or f"sampling option {param.name}",
                      flag=renamed.get(param.name, "--" + param.name.replace("_", "-")))

    return signature_options(sample, options, describe)


def resolve_sampling_options(model: Any, given: Mapping[str, Any], model_name: str = "") -> dict[str, Any]:
    """``given`` over the model's defaults, each checked; a one-line :class:`UsageError` for a bad one.

    An option the model does not have names the model's own options. Values given as text (from
    a command line or a form) are converted to the option's type.
    """
    declared = sampling_options(model)
    what = f"model {model_name!r}" if model_name else f"model {type(model).__name__}"
    resolved = {name: option.default for name, option in declared.items()}
    for name, value in given.items():
        option = declared.get(name)
        if option is None:
            own = ", ".join(o.flag for o in declared.values()) or "none"
            raise UsageError(f"{shown(name)} is not a sampling option of {what} (its sampling options: {own})")
        resolved[name] = convert(option, value, SAMPLING)
    check = getattr(model, "check_sampling_options", None)
    if callable(check):
        check(**resolved)
    return resolved


def sample(model: Any, condition: torch.Tensor, noise: torch.Tensor, generator: torch.Generator | None = None,
           options: Mapping[str, Any] | None = None) -> torch.Tensor:
    """``model.sample(condition, noise, generator=..., **options)``, the generator passed where it is accepted."""
    kwargs = dict(options or {})
    if generator is not None and _accepts(model.sample, GENERATOR):
        kwargs[GENERATOR] = generator
    with torch.no_grad():
        return model.sample(condition, noise, **kwargs)


def sampling_cost(model: Any, condition: torch.Tensor, options: Mapping[str, Any] | None = None
                  ) -> tuple[int, int] | None:
    """``(passes, width)`` the model declares for sampling ``condition`` with resolved ``options``; None when it
    declares none. A declaration that does not give two whole numbers, passes 0 or more and width 1 or more, is
    the plugin's error."""
    declare = getattr(model, "sampling_cost", None)
    if not callable(declare):
        return None
    cost = declare(condition, **dict(options or {}))
    if not (isinstance(cost, tuple) and len(cost) == 2 and all(isinstance(c, int) and not isinstance(c, bool)
                                                               for c in cost) and cost[0] >= 0 and cost[1] >= 1):
        raise PluginError(_owner(model), f"model {type(model).__name__}'s sampling_cost returned {shown(cost)}; it "
                                         "must be (passes, width): whole numbers, passes 0 or more, width 1 or more")
    return cost


def _accepts(fn: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _owner(model: Any) -> str:
    return type(model).__module__.split(".")[0] or "a plugin"


def command_flags(options: Mapping[str, Any], declared: Mapping[str, SamplingOption]) -> list[str]:
    """The flags that set ``options`` where they differ from the defaults (for an equivalent command line)."""
    parts: list[str] = []
    for name, value in options.items():
        option = declared.get(name)
        if option is None or value == option.default:
            continue
        if option.type is bool:
            parts.append(option.flag if value else "--no-" + option.flag[2:])
        else:
            parts += [option.flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return parts
