"""Weights as safetensors: written atomically, read back without unpickling anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genkit.errors import UsageError
from genkit.files import atomic_path


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


def loss_has_state(loss: Any) -> bool:
    """True when the loss is a ``torch.nn.Module`` with parameters or buffers to save and restore."""
    return isinstance(loss, torch.nn.Module) and len(loss.state_dict()) > 0


def loss_parameters(loss: Any) -> list[torch.nn.Parameter]:
    """The loss's trainable parameters (none unless it is a ``torch.nn.Module`` that owns some)."""
    return [p for p in loss.parameters() if p.requires_grad] if isinstance(loss, torch.nn.Module) else []
