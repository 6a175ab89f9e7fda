"""Weights as safetensors: written atomically, read back without unpickling anything.

safetensors reports a failed write as a ``SafetensorError`` whose text holds the OS error
(``... No space left on device (os error 28)``), and a file it may not read as "No such file";
both are turned into genkit's own errors here, so a full disk is the one line of
:class:`genkit.store.files.WriteError` and an unreadable file says it is unreadable.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genkit.errors import UsageError, shown
from genkit.store.files import WriteError, atomic_path, write_reason

#: the OS error inside a SafetensorError's text: ``(os error 28)``, or ``code: 28`` in older versions
_OS_ERROR = re.compile(r"os error (\d+)|code: (\d+)")


def save_weights(model: torch.nn.Module, path: str | Path, exclude: tuple[str, ...] = ()) -> None:
    """The model's state dict as safetensors, written to a temporary name and renamed into place.

    ``exclude``: submodule names left out (the parts used only in training, see :func:`training_only`).
    A failed write (a full disk) is a :class:`WriteError` naming ``path``; nothing is left behind.
    """
    save_tensors({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
                  if not within(k, exclude)}, path, {"format": "pt"})


def training_only(module: Any) -> tuple[str, ...]:
    """The submodules ``module`` declares as used only in training (its ``training_only`` names: a
    discriminator, a teacher): kept in checkpoints, left out of the run folder's weights."""
    names = getattr(module, "training_only", ()) or ()
    return (names,) if isinstance(names, str) else tuple(names)


def within(key: str, prefixes: tuple[str, ...]) -> bool:
    """Whether state-dict ``key`` belongs to one of the submodules named by ``prefixes``."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Tensors as a safetensors file, atomically; a failed write is a :class:`WriteError` naming ``path``."""
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as exc:
            raise _write_error(Path(path), exc) from None


def _write_error(path: Path, exc: SafetensorError) -> WriteError:
    match = _OS_ERROR.search(str(exc))
    if match is None:
        return WriteError(path, " ".join(str(exc).split())[:200] or type(exc).__name__)
    code = int(match.group(1) or match.group(2))
    return WriteError(path, write_reason(OSError(code, os.strerror(code))), code)


def load_weights(model: torch.nn.Module, path: str | Path, what: str = "model", advice: str = "",
                 complete: bool = False) -> None:
    """Load ``path`` into ``model``; a file that does not fit it is a one-line :class:`UsageError` naming what
    differs, followed by ``advice`` (what the user can do about it).

    The parts the model uses only in training (:func:`training_only`) may be absent from the file (the
    run folder's weights leave them out) unless ``complete`` (a checkpoint holds everything)."""
    path = Path(path)
    try:
        with open(path, "rb"):  # the OS's own reason first: safetensors calls every failure "No such file"
            pass
        state = load_file(str(path))
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist; the run has no saved weights yet") from None
    except PermissionError:
        raise UsageError(f"{path} cannot be read: permission denied ({_owner_and_mode(path)}); ask its owner to make "
                         f"it readable (chmod a+r {path}), or copy the run") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a readable safetensors file ({exc}); the file is truncated or corrupt") from None
    expected = model.state_dict()
    optional = () if complete else training_only(model)
    if optional:
        expected = {k: v for k, v in expected.items() if not (within(k, optional) and k not in state)}
    mismatch = state_dict_mismatch(expected, state)
    if mismatch:
        then = f"; {advice}" if advice else ""
        raise UsageError(f"{path} does not fit the {what} in config.json: {mismatch}{then}")
    try:
        model.load_state_dict(state, strict=not optional)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise UsageError(f"{path} does not fit the {what} in config.json: {first[-1].strip() if first else exc}") from None


#: keys named in a state-dict mismatch before "and N more"
SHOWN_KEYS = 3


def state_dict_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """What differs between the tensors a module expects and those a file holds, in one short line
    (the first few keys of each kind and how many more); empty when they fit."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    reshaped = [f"{k} {list(found[k].shape)} for {list(expected[k].shape)}" for k in expected
                if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]
    parts = []
    for label, keys in (("missing", missing), ("not expected", unexpected), ("of another shape", reshaped)):
        if keys:
            named = ", ".join(shown(k, quote=False) for k in keys[:SHOWN_KEYS])
            more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
            parts.append(f"{len(keys)} tensor{'s' if len(keys) != 1 else ''} {label} ({named}{more})")
    return "; ".join(parts)


def _owner_and_mode(path: Path) -> str:
    try:
        info = path.stat()
    except OSError:
        return "not readable by you"
    return f"mode {info.st_mode & 0o777:04o}, owner uid {info.st_uid}"


def loss_has_state(loss: Any) -> bool:
    """True when the loss is a ``torch.nn.Module`` with parameters or buffers to save and restore."""
    return isinstance(loss, torch.nn.Module) and len(loss.state_dict()) > 0


def loss_parameters(loss: Any) -> list[torch.nn.Parameter]:
    """The loss's trainable parameters (none unless it is a ``torch.nn.Module`` that owns some)."""
    return [p for p in loss.parameters() if p.requires_grad] if isinstance(loss, torch.nn.Module) else []
