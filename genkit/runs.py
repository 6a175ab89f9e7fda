"""A trained run loaded back from its folder, for sampling: :func:`load_run` and :class:`Run`.

The folder's layout is :mod:`genkit.run_folder`'s; weights are safetensors, so loading a run
never unpickles code. ``train_attributes.safetensors`` (the training attribute vectors) serves
``rest="data"`` and is checked when the run is loaded; ``loss.safetensors`` holds the loss's own
state when it has some (a learned σ) and is read only when ``Run.loss`` is first used (sampling
never needs it).
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
from genkit.sampling import (ATTRIBUTES_FILE, AttributeTable, Samples, _decode, check_images_fit, generate, noise,
                             parse_attrs, warn_note)
from genkit.weights import load_weights, loss_has_state


class Run:
    """A trained run: its config, the rebuilt model, and sampling by attribute names."""

    def __init__(self, directory: Path, config: RunConfig, model: torch.nn.Module, conditioner: Any,
                 loss: Any, device: torch.device, loss_state: Path | None = None):
        self.directory = directory
        self.config = config
        self.model = model
        self.conditioner = conditioner
        self._loss = loss
        #: the loss's saved state, read on first use of :attr:`loss`: sampling never needs it
        self._loss_state = loss_state
        self.device = device

    @property
    def loss(self) -> Any:
        """The run's loss, with its own trained state (``loss.safetensors``) read in when first asked for.

        Sampling never uses the loss, so a run folder without ``loss.safetensors`` (a Space that
        ships only what sampling needs) samples; asking for the loss then names the missing file.
        """
        if self._loss_state is not None:
            load_weights(self._loss, self._loss_state, what="loss")
            self._loss_state = None
            self._loss.to(self.device)
        return self._loss

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
            check_images_fit(self, n, f"n={n}")
            z = noise(self, n, seed, temperature)
            return _decode(self, self.condition(attrs, n), z)
        return self.generate(attrs, n=n, seed=seed, temperature=temperature, rest=rest).images

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
    chosen = resolve_device(device)
    model.to(chosen).eval()
    if isinstance(loss, torch.nn.Module):
        loss.to(chosen)
    loaded = Run(directory, config, model, conditioner, loss, chosen,
                 loss_state=directory / LOSS_WEIGHTS_FILE if loss_has_state(loss) else None)
    if (directory / ATTRIBUTES_FILE).is_file():  # checked now, so a damaged table stops `serve` at its start
        loaded._attribute_table = (AttributeTable.load(directory, loaded.attribute_names), None)
    return loaded
