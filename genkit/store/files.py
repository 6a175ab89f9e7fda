"""Writing files that matter: complete or not at all, one clear line when the disk says no.

Every file and folder genkit keeps (weights, checkpoints, configs, logs, grids) is written to a
temporary name beside its target and renamed into place; on any failure the temporary is
removed, so a full disk or a crash never leaves a half-written file taken for a good one. An
``OSError`` while writing (no space left, quota, read-only file system, no permission) becomes a
:class:`WriteError`: one line naming the file and the reason, exit code 1.

A file renamed into place gets the mode the user's umask gives a new file (0644 under umask
022), whatever the library that wrote it chose (safetensors writes 0600), so a run folder shared
with a colleague or a serving account is readable as a whole or not at all.
"""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from genkit.errors import GenkitRuntimeError, UsageError

#: what an errno means for someone whose write just failed
WRITE_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EFBIG: "the file is too large for the file system",
    errno.EIO: "an I/O error on the device",
}


class WriteError(GenkitRuntimeError):
    """A file could not be written (disk full, read-only, no permission). Exit code 1."""

    def __init__(self, path: str | Path, reason: str, errno_: int | None = None):
        self.path = Path(path)
        self.reason = reason
        self.errno = errno_
        super().__init__(f"cannot write {self.path}: {reason}")


def write_reason(exc: OSError) -> str:
    """A short, plain reason for a failed write."""
    return WRITE_REASONS.get(exc.errno, exc.strerror or type(exc).__name__)


@contextmanager
def reporting_write_errors(path: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into a :class:`WriteError` naming ``path``."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError(path, write_reason(exc), exc.errno) from exc


def current_umask() -> int:
    """The process's umask, read without changing it where the platform says (Linux), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: Path) -> None:
    """Give the file ``path`` the mode ``open()`` would have given it: 0666 less the umask."""
    if path.is_file() and not path.is_symlink():
        os.chmod(path, 0o666 & ~current_umask())


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except OSError:
        pass


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    On any failure the temporary file is removed and ``path`` is left as it was. The file gets
    the mode the umask gives a new file, whatever wrote it.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with reporting_write_errors(path):
            yield tmp
            follow_umask(tmp)
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            _remove(tmp)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; it becomes ``path`` if the block succeeds.

    A folder already at ``path`` is replaced only after the new one is complete (moved aside,
    then deleted), so at every moment one complete folder, old or new, is there. On failure
    the temporary folder is removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    aside = path.with_name(f".{path.name}.old-{os.getpid()}")
    _remove(tmp)
    try:
        with reporting_write_errors(path):
            tmp.mkdir(parents=True)
            yield tmp
            if path.exists():
                os.replace(path, aside)
            os.replace(tmp, path)
    except WriteError as exc:  # a file inside failed: name the folder the user knows, not the temporary
        if aside.exists() and not path.exists():
            os.replace(aside, path)
        raise WriteError(path, exc.reason, exc.errno) from exc
    except BaseException:
        if aside.exists() and not path.exists():
            os.replace(aside, path)
        raise
    finally:
        _remove(tmp)
        _remove(aside)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def make_output_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create the folder ``path`` (and its parents) for a command's output, or refuse in one line.

    A path that is a file, lies under a file, or is on a read-only or unwritable file system is
    a :class:`UsageError` (exit code 2) naming it, raised before any work starts.
    """
    path = Path(path)
    check_output_dir(path, flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag} {path} cannot be created: {write_reason(exc)}; choose another folder") from None
    return path


def check_output_dir(path: str | Path, flag: str = "--out", named: str | Path | None = None) -> None:
    """Refuse an output folder that cannot be made or written, without creating anything.

    ``named`` is the path the user gave, when it is a file inside ``path``.
    """
    path = Path(path)
    named = Path(named) if named is not None else path
    if path.exists() and not path.is_dir():
        what = "an existing file, not a folder" if named == path else f"under {path}, which is a file"
        raise UsageError(f"{flag} {named} is {what}; choose another path")
    parent = _existing_ancestor(path)
    if not parent.is_dir():
        raise UsageError(f"{flag} {named} lies under {parent}, which is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK) or _read_only(parent):
        raise UsageError(f"{flag} {named} cannot be written: {parent} is read-only or not writable by you; "
                         "choose another folder")


def check_output_file(path: str | Path, flag: str = "--out") -> None:
    """Refuse an output file whose folder cannot be made or written, or that names a folder."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file name, for example {path / 'samples.png'}")
    check_output_dir(path.parent, flag, named=path)


def _existing_ancestor(path: Path) -> Path:
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False
