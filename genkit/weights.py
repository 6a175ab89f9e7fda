"""Weights as safetensors: written atomically, read back without unpickling anything."""

from __future__ import annotations

from pathlib import Path

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


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
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
        raise UsageError(f"{path} does not fit the model in config.json: {first[-1].strip() if first else exc}") from None
