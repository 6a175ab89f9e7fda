"""The one batched sampling loop: every image genkit draws from a model goes through :func:`sample_batches`.

``Run.sample``, ``genkit sample``, the page, the sweep's figures, the epoch grids, every metric of
``genkit evaluate`` and conformity, reconstruction and editing by an inverted sampler all call it.
It takes plain arguments: the model, the conditions, the noise (drawn already, or a generator to
draw each batch's from), the sampling options *resolved* by ``Run.resolve_options`` (or None, the
model's defaults), the device, the generator a sampler that draws randomness of its own is given,
and the batch size. The noise is the model's (``noise_shape``), drawn from N(0, I); what the
sampler does with it is the model's own (:mod:`genkit.sampling.capabilities`). Which conditions to
draw for is :mod:`genkit.sampling.attributes`'s.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Union

import torch

from genkit.sampling import capabilities

#: images drawn in one call of the sampler: what a model's activations cost is bounded by this batch
SAMPLE_BATCH = 256

#: the noise of a batch: a slice of a tensor drawn already, or drawn batch by batch from a (CPU) generator
Noise = Union[torch.Tensor, torch.Generator]
#: the generator a sampler gets: one for every batch, one made per batch from the batch's first row, or none
SamplerGenerator = Union[torch.Generator, Callable[[int], torch.Generator], None]


def sample_batches(model: torch.nn.Module, condition: torch.Tensor, noise: Noise,
                   options: Mapping[str, Any] | None, device: torch.device, generator: SamplerGenerator = None,
                   batch_size: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """The samples of ``condition`` (n, dim), ``batch_size`` (default :data:`SAMPLE_BATCH`) at a time: yields
    ``(start, images)``, images float on ``device``.

    ``noise`` is the (n, *noise_shape) noise, or a generator each batch's noise is drawn from in turn
    (so the draws interleave with whatever else the caller takes from it between batches).
    ``options`` are resolved sampling options (None: the model's defaults). ``generator`` goes to a
    sampler that draws fresh randomness of its own: the same one for every batch, or
    ``generator(start)`` for the batch starting at row ``start``.
    """
    model.eval()
    batch_size = batch_size or SAMPLE_BATCH
    for start in range(0, len(condition), batch_size):
        stop = min(start + batch_size, len(condition))
        part = noise[start:stop] if isinstance(noise, torch.Tensor) else \
            capabilities.draw_noise(model, stop - start, noise)
        sampler = generator(start) if callable(generator) else generator
        yield start, capabilities.sample(model, condition[start:stop].to(device), part.to(device), sampler,
                                         options).float()


def sample_images(model: torch.nn.Module, condition: torch.Tensor, noise: Noise, options: Mapping[str, Any] | None,
                  device: torch.device, generator: SamplerGenerator = None,
                  batch_size: int | None = None) -> torch.Tensor:
    """All the samples of :func:`sample_batches`, on the CPU, in one tensor (never the batches and their
    concatenation at once)."""
    images = None
    for start, part in sample_batches(model, condition, noise, options, device, generator, batch_size):
        part = part.cpu()
        if images is None:
            images = part if len(part) == len(condition) else part.new_empty((len(condition), *part.shape[1:]))
        if images is not part:
            images[start:start + len(part)] = part
    return images


def seeded_noise(model: torch.nn.Module, n: int, seed: int) -> torch.Tensor:
    """``n`` draws of the model's noise from N(0, I), on the CPU, from a generator seeded by ``seed``."""
    return capabilities.draw_noise(model, n, torch.Generator().manual_seed(seed))


def seeded_generator(device: torch.device, seed: int) -> torch.Generator:
    """The generator on ``device`` a sampler drawing randomness of its own gets for ``seed``."""
    return torch.Generator(device).manual_seed(int(seed) % 2**63)


@dataclass
class Samples:
    """Images in [0, 1] on the CPU, the attribute set of each, and a note when the rest fell back to off."""

    images: torch.Tensor
    attribute_sets: list[list[str]] = field(default_factory=list)
    note: str | None = None


def check_images_fit(image_shape: tuple[int, ...], count: int, what: str) -> None:
    """Refuse ``count`` float images of ``image_shape`` (C, H, W) that cannot fit in memory, before any is drawn."""
    from genkit.runtime.memory import require_memory

    per_image = 4 * math.prod(image_shape)
    require_memory(count * per_image, f"{what} ({count} images of {'x'.join(map(str, image_shape[1:]))})",
                   "ask for fewer images")


def warn_note(samples: Samples) -> Samples:
    """The Python API's way of saying the rest fell back to off: a warning."""
    if samples.note:
        warnings.warn(samples.note, stacklevel=3)
    return samples
