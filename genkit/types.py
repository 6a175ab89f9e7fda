"""The contracts between the core and the components plugins provide.

These are structural: a plugin's classes need not inherit from anything here, they only need
the attributes and methods listed. ``ModelOutput`` and ``LossResult`` are concrete containers
that models and losses return.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from genkit_datasets.source import SourceIndex


@dataclass
class ModelOutput:
    """What ``model(images, condition)`` returns: the reconstruction and q(z|x, y)."""

    reconstruction: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __getitem__(self, key: str) -> torch.Tensor:
        """Mapping-style access (``out["mu"]``), for code written against dict outputs."""
        if key in self.extras:
            return self.extras[key]
        return getattr(self, key)


@dataclass
class LossResult:
    """``total`` is minimised; ``terms`` are per-image scalars logged beside it (mse, kl, ...)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class DatasetSource(Protocol):
    """What a ``register_datasets`` factory returns."""

    name: str
    description: str
    default_image_size: tuple[int, int]
    #: True when the data lives in a folder the user provides (``--root``).
    needs_root: bool
    #: Where to get the data, shown when ``--root`` is missing.
    obtain_hint: str

    def scan(self, root: Path | None) -> SourceIndex: ...


@runtime_checkable
class Conditioner(Protocol):
    """What a ``register_conditioners`` factory returns (a ``torch.nn.Module``)."""

    attribute_names: list[str]
    dim: int
    latent_extra_dim: int

    def encode(self, spec: str | list[str]) -> torch.Tensor: ...

    def input_layer(self, image_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                    padding: int = 0) -> torch.nn.Module: ...

    def join_latent(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Model(Protocol):
    """What a ``register_models`` factory returns (a ``torch.nn.Module``).

    A model with a conditional prior (``extras["prior_mu"]``/``["prior_logvar"]``) also needs
    ``decode(z, condition)``, so evaluation can score codes drawn from q(z|x, y).
    """

    latent_dim: int

    def __call__(self, images: torch.Tensor, condition: torch.Tensor) -> ModelOutput: ...

    def sample(self, condition: torch.Tensor, z: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor: ...


@runtime_checkable
class Loss(Protocol):
    """What a ``register_losses`` factory returns."""

    def __call__(self, output: ModelOutput, images: torch.Tensor) -> LossResult: ...
