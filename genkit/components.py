"""Build the conditioner, model and loss a config describes, through the registries."""

from __future__ import annotations

import json
from typing import Any

from genkit.config import ComponentSpec, RunConfig
from genkit.errors import UsageError
from genkit.plugins import registry


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


def build_components(config: RunConfig) -> tuple[Any, Any, Any]:
    """``(conditioner, model, loss)`` for ``config``; the model is freshly initialised."""
    conditioner = registry("conditioners").get(config.conditioner.name).create(
        list(config.data.attribute_names), **config.conditioner.options)
    model = registry("models").get(config.model.name).create(
        config.image_shape, conditioner, **config.model.options)
    loss = registry("losses").get(config.loss.name).create(**config.loss.options)
    return conditioner, model, loss
