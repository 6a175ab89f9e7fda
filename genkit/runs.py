"""Run folders: saving weights safely, and loading a trained run back for sampling.

A run folder holds ``config.json``, ``model.safetensors``, ``metrics.jsonl`` (one line per
epoch), ``steps.jsonl`` (logged steps), ``samples/epoch_NNN.png`` and ``loss_curve.png``, and
``loss.safetensors`` when the loss is a ``torch.nn.Module`` with state (a learned decoder σ, say).
Weights are safetensors: loading a run never unpickles code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genkit.components import build_components
from genkit.config import RunConfig
from genkit.errors import UsageError
from genkit.files import atomic_path

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
LOSS_WEIGHTS_FILE = "loss.safetensors"


def loss_has_state(loss: Any) -> bool:
    """True when the loss is a ``torch.nn.Module`` with parameters or buffers to save and restore."""
    return isinstance(loss, torch.nn.Module) and len(loss.state_dict()) > 0


def loss_parameters(loss: Any) -> list[torch.nn.Parameter]:
    """The loss's trainable parameters (none unless it is a ``torch.nn.Module`` that owns some)."""
    return [p for p in loss.parameters() if p.requires_grad] if isinstance(loss, torch.nn.Module) else []


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """The model's state dict as safetensors, written to a temporary name and renamed into place."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})


def load_weights(model: torch.nn.Module, path: str | Path, what: str = "model") -> None:
    path = Path(path)
    try:
        state = load_file(str(path))
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist; the run has no saved weights yet") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a readable safetensors file ({exc}); the file is truncated or corrupt") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise UsageError(f"{path} does not fit the {what} in config.json: {first[-1].strip() if first else exc}") from None


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; an explicit ``cuda`` without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise UsageError(f"device {device!r} is not valid; use auto, cpu, cuda or cuda:N") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} asked for, but no CUDA GPU is available; use --device cpu or auto")
    if chosen.type not in ("cpu", "cuda"):
        raise UsageError(f"device {device!r} is not supported; use auto, cpu, cuda or cuda:N")
    return chosen


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

    def condition(self, attrs: str | list[str] | torch.Tensor, n: int = 1) -> torch.Tensor:
        """A (n, A) batch of one condition, from ``"A,B,-C"`` or a vector."""
        vector = attrs if isinstance(attrs, torch.Tensor) else self.conditioner.encode(attrs)
        return vector.to(self.device, torch.float32).reshape(1, -1).expand(n, -1)

    def latents(self, n: int, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(n, self.model.latent_dim, generator=generator).to(self.device)

    @torch.no_grad()
    def sample(self, attrs: str | list[str] | torch.Tensor, n: int = 16, seed: int = 0) -> torch.Tensor:
        """``n`` images (n, 3, H, W) in [0, 1] with the attributes asked for; the same seed, the same images."""
        self.model.eval()
        return self.model.sample(self.condition(attrs, n), z=self.latents(n, seed)).float().cpu()


def load_run(directory: str | Path, device: str = "auto") -> Run:
    """Rebuild a run from its folder: ``config.json`` names the components, safetensors holds the weights
    (the model's, and the loss's own state when it has some)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"run folder {directory} does not exist; pass the folder `genkit train` wrote (see --out)")
    config = RunConfig.load(directory / CONFIG_FILE)
    conditioner, model, loss = build_components(config)
    load_weights(model, directory / WEIGHTS_FILE)
    if loss_has_state(loss):
        load_weights(loss, directory / LOSS_WEIGHTS_FILE, what="loss")
    chosen = resolve_device(device)
    model.to(chosen).eval()
    if isinstance(loss, torch.nn.Module):
        loss.to(chosen)
    return Run(directory, config, model, conditioner, loss, chosen)
