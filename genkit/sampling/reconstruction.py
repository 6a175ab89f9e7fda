"""Real images rebuilt by a run's model: through its posterior, or by inverting its sampler."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from genkit.errors import UsageError
from genkit.sampling import capabilities
from genkit.sampling.draw import sample_images
from genkit.sampling.run import Run

#: images reconstructed in one forward pass
RECONSTRUCT_BATCH = 256


def can_reconstruct(model) -> bool:
    """A model reconstructs through its posterior, or by inverting its sampler."""
    return capabilities.has(model, "posterior") or capabilities.has(model, "invert")


@torch.no_grad()
def reconstruct(run: Run, images: torch.Tensor, condition: torch.Tensor, seed: int = 0,
                options: Mapping[str, Any] | None = None) -> torch.Tensor:
    """The model's reconstructions of images in [0, 1], on the CPU.

    With a posterior: one draw z ~ q(z|x,y) (seeded), decoded. Without one, a model that can
    invert its sampler: the noise ``invert`` finds, sampled again with the same options (resolved
    by ``Run.resolve_options``; None: the model's defaults). A model with neither has no
    reconstructions (a :class:`UsageError`). Images go through the model
    :data:`RECONSTRUCT_BATCH` at a time, so its activations stay bounded.
    """
    model = run.model
    model.eval()
    device = run.device
    if capabilities.has(model, "posterior"):
        def rebuild(images: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
            mu, logvar = model.encode(images, condition)
            return model.decode(mu + torch.exp(0.5 * logvar) * torch.randn_like(mu), condition)
    elif capabilities.has(model, "invert"):
        resolved = run.resolve_options() if options is None else dict(options)  # invert's defaults may differ
        generator = torch.Generator(device).manual_seed(seed)

        def rebuild(images: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
            noise = model.invert(images, condition, **resolved)
            return sample_images(model, condition, noise, resolved, device, generator, batch_size=len(noise))
    else:
        raise UsageError(f"model {run.config.model.name!r} has neither a posterior (encode/decode) nor an inverse of "
                         "its sampler (invert), so it cannot reconstruct images")
    parts = []
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(images), RECONSTRUCT_BATCH):
            stop = start + RECONSTRUCT_BATCH
            parts.append(rebuild(images[start:stop].to(device).float(), condition[start:stop].to(device).float())
                         .float().clamp(0, 1).cpu())
    return torch.cat(parts)
