"""A trained run loaded back from its folder, for sampling: :func:`load_run` and :class:`Run`.

The folder's layout is :mod:`genkit.run_folder`'s; weights are safetensors, so loading a run
never unpickles code. ``train_attributes.safetensors`` (the training attribute vectors) serves
``rest="data"``; ``loss.safetensors`` holds the loss's own state when it has some (a learned σ).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genkit.components import build_components
from genkit.config import RunConfig
from genkit.distributed import resolve_device
from genkit.errors import UsageError
from genkit.run_folder import CONFIG_FILE, LOSS_WEIGHTS_FILE, WEIGHTS_FILE
from genkit.sampling import Samples, generate, noise, parse_attrs, warn_note
from genkit.weights import load_weights, loss_has_state


class Run:
    """A trained run: its config, the rebuilt model, and sampling by attribute names."""

    def __init__(self, directory: Path, config: RunConfig, model: torch.nn.Module, conditioner: Any,
                 loss: Any, device: torch.device):
        self.directory = directory
        self.config = config
        self.model = model
        self.conditioner = conditioner
        self.loss = loss
        self.device = device

    @property
    def attribute_names(self) -> list[str]:
        return list(self.config.data.attribute_names)

    @property
    def exclusive_groups(self) -> list[str]:
        """Attribute families with exactly one value per image, as the dataset declared them."""
        return list(self.config.data.exclusive_groups)

    def condition(self, attrs: str | list[str] | torch.Tensor, n: int = 1) -> torch.Tensor:
        """A (n, A) batch of one condition, from ``"A,B,-C"`` (the rest off) or a vector."""
        if isinstance(attrs, torch.Tensor):
            vector = attrs
        else:
            vector = self.conditioner.encode(attrs)  # the conditioner's own checks and messages first
            parse_attrs(attrs, self.attribute_names, self.exclusive_groups)
        return vector.to(self.device, torch.float32).reshape(1, -1).expand(n, -1)

    def latents(self, n: int, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(n, self.model.latent_dim, generator=generator).to(self.device)

    @torch.no_grad()
    def sample(self, attrs: str | list[str] | torch.Tensor, n: int = 16, seed: int = 0, temperature: float = 1.0,
               rest: str = "data") -> torch.Tensor:
        """``n`` images (n, 3, H, W) in [0, 1] with the attributes asked for; the same seed, the same images.

        ``rest="data"`` takes the attributes not named from training vectors that agree with the
        named ones (a warning when none does, and then they are off); ``rest="off"`` switches
        them off. ``temperature`` scales the prior noise. A vector ``attrs`` is used as it is.
        """
        if isinstance(attrs, torch.Tensor):
            self.model.eval()
            z = noise(self, n, seed, temperature)
            return self.model.sample(self.condition(attrs, n), z.to(self.device)).float().cpu()
        return self.generate(attrs, n=n, seed=seed, temperature=temperature, rest=rest).images

    def edit(self, images: torch.Tensor, attributes: torch.Tensor | str, set: str | list[str],  # noqa: A002
             **options: Any):
        """Real ``images`` (B, 3, H, W) with ``attributes`` (a (B, A) 0/1 tensor, or one spec for all) changed
        by ``set`` (``"color::blue,-outline"``, or a list: one edit each); see :mod:`genkit.editing`.

        Returns a :class:`genkit.editing.Edits`: ``.original``, ``.reconstruction`` (nothing changed),
        ``.edited`` (one batch per change) and the attribute vectors. ``options`` are the model's
        sampling options, for a model that edits by inverting its sampler.
        """
        from genkit.editing import edit

        return edit(self, images, attributes, set, options)

    def generate(self, attrs: str | list[str], n: int = 16, seed: int = 0, temperature: float = 1.0,
                 rest: str = "data") -> Samples:
        """Like :meth:`sample`, also returning each sample's attribute set and the fallback note."""
        return warn_note(generate(self, attrs, n=n, seed=seed, temperature=temperature, rest=rest))


def load_run(directory: str | Path, device: str = "auto") -> Run:
    """Rebuild a run from its folder: ``config.json`` names the components, safetensors holds the weights
    (the model's, and the loss's own state when it has some)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"run folder {directory} does not exist; pass the folder `genkit train` wrote (see --out)")
    config = RunConfig.load(directory / CONFIG_FILE)
    try:
        conditioner, model, loss = build_components(config)  # options and memory are checked first
    except UsageError as exc:
        raise UsageError(f"{directory / CONFIG_FILE}: {exc}") from None
    load_weights(model, directory / WEIGHTS_FILE)
    if loss_has_state(loss):
        load_weights(loss, directory / LOSS_WEIGHTS_FILE, what="loss")
    chosen = resolve_device(device)
    model.to(chosen).eval()
    if isinstance(loss, torch.nn.Module):
        loss.to(chosen)
    return Run(directory, config, model, conditioner, loss, chosen)
