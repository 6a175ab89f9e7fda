"""Build the conditioner, model and loss a config describes, through the registries."""

from __future__ import annotations

from typing import Any

from genkit.config import ComponentSpec, RunConfig
from genkit.plugins import registry


def resolve(kind: str, spec: ComponentSpec, skip: tuple[str, ...] = ()) -> ComponentSpec:
    """The same spec with every option the factory accepts filled in (checks names and options)."""
    component = registry(kind).get(spec.name)
    return ComponentSpec(spec.name, component.resolve_options(spec.options, skip=skip))


def build_components(config: RunConfig) -> tuple[Any, Any, Any]:
    """``(conditioner, model, loss)`` for ``config``; the model is freshly initialised."""
    conditioner = registry("conditioners").get(config.conditioner.name).create(
        list(config.data.attribute_names), **config.conditioner.options)
    model = registry("models").get(config.model.name).create(
        config.image_shape, conditioner, **config.model.options)
    loss = registry("losses").get(config.loss.name).create(**config.loss.options)
    return conditioner, model, loss


CONDITIONER_ARGS = ("attribute_names",)
MODEL_ARGS = ("image_shape", "conditioner")
