"""The contracts between the core and the components plugins provide.

These are structural: a plugin's classes need not inherit from anything here, they only need
the attributes and methods listed. ``LossResult`` is the container every loss returns;
``ModelOutput`` is a ready container for a VAE-like model's training output (the bundled losses
read it); another family returns its own (genkit never looks inside).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from genkit_datasets.source import SourceIndex


@dataclass
class ModelOutput:
    """A VAE-like model's training output: the reconstruction and q(z|x, y) (what ``beta-elbo`` and
    ``gaussian-elbo`` read)."""

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
    """What a ``register_conditioners`` factory returns (a ``torch.nn.Module``).

    Beyond these members a conditioner offers the forms models need: ``input_layer`` and
    ``join_latent`` (with ``latent_extra_dim``) for models that tile or join the condition,
    ``vector`` (with ``vector_dim``) and ``null_condition`` for models that embed it and guide.

    Partial conditions, optional: ``encode_partial(spec) -> Tensor`` gives the named attributes 1 or
    0 and every other entry −1, *unspecified* (all −1 is the null condition); ``drop(condition,
    probability, generator=None) -> Tensor`` makes each unit of each row unspecified with
    ``probability``, independently (a unit is a ``group::`` family, whole, or a plain attribute,
    found from the names), from ``generator`` or torch's global random state: what training does
    so that a model learns each unit's null. With them, ``vector`` must tell on, off and unspecified
    apart per entry. genkit states an exclusive family whole before ``encode_partial`` (``rest="model"``).
    """

    attribute_names: list[str]
    dim: int

    def encode(self, spec: str | list[str]) -> torch.Tensor: ...


@runtime_checkable
class Model(Protocol):
    """What a ``register_models`` factory returns (a ``torch.nn.Module``).

    Every model trains through ``forward`` (whose output its loss reads) and samples from noise of
    ``noise_shape``; the keyword parameters of ``sample`` after ``generator`` are its sampling
    options. Capabilities beyond that (``encode``/``decode``, ``invert``, ``log_likelihood``) are
    optional and found by :mod:`genkit.sampling.capabilities`.
    """

    noise_shape: tuple[int, ...]

    def __call__(self, images: torch.Tensor, condition: torch.Tensor) -> Any: ...

    def sample(self, condition: torch.Tensor, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor: ...


@runtime_checkable
class Loss(Protocol):
    """What a ``register_losses`` factory returns: it reads what the model's ``forward`` returned."""

    def __call__(self, output: Any, images: torch.Tensor) -> LossResult: ...
