"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a folder ``checkpoints/<tag>/`` holding ``model.safetensors`` (the weights),
``loss.safetensors`` (the loss's own state, only for a loss that is a module with state),
``ema.safetensors`` (the averaged weights, only with ``--ema``) and
``state.pt`` (every optimizer's state by name, RNG states, epoch, step and the epoch's partial sums: tensors and
plain Python values only, read back with ``torch.load(weights_only=True)``, so loading never
unpickles code). Each checkpoint is written into a temporary folder and renamed into place;
``checkpoints/latest`` names the newest complete one and is itself replaced atomically, so an
interrupted save leaves the previous checkpoint in force.
"""

from __future__ import annotations

import pickle
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from genkit.components.limits import derived_seed
from genkit.errors import UsageError
from genkit.runtime import distributed
from genkit.runtime.distributed import World
from genkit.store.files import WriteError, atomic_dir, atomic_path, reporting_write_errors, write_text_atomic
from genkit.store.run_folder import LOSS_WEIGHTS_FILE, WEIGHTS_FILE
from genkit.store.weights import load_weights, loss_has_state, save_weights
from genkit.training.averaging import EMA_FILE

CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_FILE = "state.pt"
KEEP = 2
#: the only folders rotation may delete: genkit's own checkpoints, ``step-<9 digits>``
STEP_FOLDER = re.compile(r"step-\d{9,}")
#: what a save killed midway leaves beside them: ``.step-….partial-<pid>`` or ``.step-….old-<pid>``
LEFTOVER = re.compile(r"\.step-\d{9,}\.(partial|old)-\d+")


def step_tag(step: int) -> str:
    """The folder name of the checkpoint at ``step``: ``step-000000016``."""
    return f"step-{step:09d}"


def save_checkpoint(run_dir: Path, tag: str, model: torch.nn.Module, state: dict[str, Any],
                    loss: Any = None, average: torch.nn.Module | None = None) -> Path:
    """Write checkpoint ``tag`` and point ``latest`` at it; older ones beyond the last two go.

    ``loss`` is saved too when it has state of its own (``loss.safetensors``), and ``average``
    (the averaged weights of ``--ema``) as ``ema.safetensors``. A failure while writing (a full
    disk) is a :class:`genkit.store.files.WriteError`; the half-written folder is removed and ``latest``
    still names the previous, complete checkpoint. Rotation deletes only genkit's own ``step-*``
    folders and the leftovers of its own interrupted saves: anything else under ``checkpoints/``
    (a copy the user made, their notes) is never touched.
    """
    root = Path(run_dir) / CHECKPOINTS
    with reporting_write_errors(root):
        root.mkdir(parents=True, exist_ok=True)
    final = root / tag
    with atomic_dir(final) as partial:
        save_weights(model, partial / WEIGHTS_FILE)
        if loss_has_state(loss):
            save_weights(loss, partial / LOSS_WEIGHTS_FILE)
        if average is not None:
            save_weights(average, partial / EMA_FILE)
        with atomic_path(partial / STATE_FILE) as tmp:
            torch.save(state, tmp)
    write_text_atomic(root / LATEST, tag + "\n")
    rotate(root, keep=tag)
    return final


def rotate(root: Path, keep: str) -> None:
    """Delete genkit's own checkpoints beyond the newest :data:`KEEP` (never ``keep``), and the
    temporary folders of saves that were killed; nothing whose name genkit did not make."""
    own = sorted(p for p in root.iterdir() if STEP_FOLDER.fullmatch(p.name) and p.is_dir() and not p.is_symlink())
    for old in own[:-KEEP]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
    for leftover in root.iterdir():
        if LEFTOVER.fullmatch(leftover.name) and leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint ``latest`` names; if that folder is gone (deleted as damaged), the newest one left."""
    root = Path(run_dir) / CHECKPOINTS
    pointer = root / LATEST
    if pointer.is_file():
        path = root / pointer.read_text().strip()
        if path.name and not path.name.startswith(".") and path.is_dir():
            return path
    complete = sorted(p for p in root.iterdir() if STEP_FOLDER.fullmatch(p.name) and p.is_dir()) \
        if root.is_dir() else []
    return complete[-1] if complete else None


def load_checkpoint(path: Path, model: torch.nn.Module, map_location: torch.device | str = "cpu",
                    loss: Any = None, average: torch.nn.Module | None = None) -> dict[str, Any]:
    """Load weights into ``model`` (the loss's state into ``loss``, the averaged weights into ``average``)
    and return the saved training state.

    A truncated or corrupt file is a :class:`UsageError` naming it.
    """
    try:
        load_weights(model, path / WEIGHTS_FILE, complete=True)
        if loss_has_state(loss):
            load_weights(loss, path / LOSS_WEIGHTS_FILE, what="loss", complete=True)
        if average is not None:
            load_weights(average, path / EMA_FILE, what="averaged model", complete=True)
    except UsageError as exc:
        raise UsageError(f"{exc}; delete {path} to resume from the checkpoint before it") from None
    state_file = path / STATE_FILE
    try:
        return torch.load(state_file, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"{state_file} is missing; the checkpoint is incomplete: delete {path} to resume from "
                         "the one before") from None
    except pickle.UnpicklingError:
        # Never repeat torch's hint to load with weights_only=False: the safe loader stays on.
        raise UsageError(f"{state_file} holds something other than tensors and plain values, so genkit will not "
                         f"load it (it was not written by genkit, or was altered); delete {path} to resume from the "
                         "one before") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise UsageError(f"{state_file} is truncated or corrupt ({_first_sentence(exc)}); "
                         f"delete {path} to resume from the one before") from None


def _first_sentence(exc: BaseException) -> str:
    """The cause in a few words, without any of torch's advice about loading unsafely."""
    text = " ".join(str(exc).split())
    first = re.split(r"(?<=[.:;])\s", text, maxsplit=1)[0].rstrip(".:;") if text else type(exc).__name__
    if "weights_only" in first or len(first) > 120:
        return type(exc).__name__
    return first


def random_state(world: World, device: torch.device) -> dict[str, Any]:
    """The random state a checkpoint saves: this process's (``rng_cpu``, ``rng_cuda``) and, under torchrun,
    every process's (a collective: every process calls it), so a resume continues each one's noise."""
    saved: dict[str, Any] = {"rng_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        saved["rng_cuda"] = torch.cuda.get_rng_state_all()
    if world.distributed:
        saved["rng_cpu_ranks"] = distributed.gather(world, torch.get_rng_state())
        if device.type == "cuda":
            saved["rng_cuda_ranks"] = distributed.gather(world, torch.cuda.get_rng_state(device))
    return saved


def restore_random_state(saved: dict[str, Any], world: World, device: torch.device, seed: int) -> None:
    """This process's random state as :func:`random_state` saved it. A checkpoint from another number of
    processes (or an older genkit) gives each process a seed of its own instead, reproducibly."""
    torch.set_rng_state(saved["rng_cpu"])
    if "rng_cuda" in saved and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng_cuda"])
    if not world.distributed:
        return
    ranks, cuda = saved.get("rng_cpu_ranks"), saved.get("rng_cuda_ranks")
    if isinstance(ranks, list) and len(ranks) == world.size:
        torch.set_rng_state(ranks[world.rank])
        if device.type == "cuda" and isinstance(cuda, list) and len(cuda) == world.size:
            torch.cuda.set_rng_state(cuda[world.rank], device)
    else:
        torch.manual_seed(derived_seed(seed * 7919, world.rank + saved["step"]))


def write_failed(out: Path, exc: WriteError) -> WriteError:
    """A failed write in run folder ``out`` (a full disk): what is still safe, and how to continue once there is room."""
    checkpoint = latest_checkpoint(out) if out.is_dir() else None
    if checkpoint is not None:
        then = (f"the last complete checkpoint, {checkpoint}, is intact: free some space, then "
                f"`genkit train --resume {out}`")
    else:
        then = f"no checkpoint was written: free some space, then `genkit train --resume {out}`"
    return WriteError(exc.path, f"{exc.reason}; {then}", exc.errno)
