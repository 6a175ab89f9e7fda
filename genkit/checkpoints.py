"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a folder ``checkpoints/<tag>/`` holding ``model.safetensors`` (the weights),
``loss.safetensors`` (the loss's own state, only for a loss that is a module with state) and
``state.pt`` (optimizer state, RNG states, epoch, step and the epoch's partial sums: tensors and
plain Python values only, read back with ``torch.load(weights_only=True)``, so loading never
unpickles code). Each checkpoint is written into a temporary folder and renamed into place;
``checkpoints/latest`` names the newest complete one and is itself replaced atomically, so an
interrupted save leaves the previous checkpoint in force.
"""

from __future__ import annotations

import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from genkit.errors import UsageError
from genkit.files import write_text_atomic
from genkit.runs import LOSS_WEIGHTS_FILE, load_weights, loss_has_state, save_weights

CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_FILE = "state.pt"
KEEP = 2


def save_checkpoint(run_dir: Path, tag: str, model: torch.nn.Module, state: dict[str, Any], loss: Any = None) -> Path:
    """Write checkpoint ``tag`` and point ``latest`` at it; older ones beyond the last two go."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / tag
    partial = root / f".{tag}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    save_weights(model, partial / "model.safetensors")
    if loss_has_state(loss):
        save_weights(loss, partial / LOSS_WEIGHTS_FILE)
    torch.save(state, partial / STATE_FILE)
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    write_text_atomic(root / LATEST, tag + "\n")
    complete = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in complete[:-KEEP]:
        if old.name != tag:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if path.is_dir() else None


def load_checkpoint(path: Path, model: torch.nn.Module, map_location: torch.device | str = "cpu",
                    loss: Any = None) -> dict[str, Any]:
    """Load weights into ``model`` (and the loss's state into ``loss``) and return the saved training state.

    A truncated or corrupt file is a :class:`UsageError` naming it.
    """
    load_weights(model, path / "model.safetensors")
    if loss_has_state(loss):
        load_weights(loss, path / LOSS_WEIGHTS_FILE, what="loss")
    state_file = path / STATE_FILE
    try:
        return torch.load(state_file, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"{state_file} is missing; the checkpoint is incomplete") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{state_file} is truncated or corrupt ({reason}); "
                         "delete the checkpoint folder to resume from the one before") from None
