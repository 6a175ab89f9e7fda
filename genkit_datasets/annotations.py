"""Reading the annotation text files of real datasets: locate, split into lines, fingerprint.

Shared by the CelebA and CUB readers. Every problem becomes a one-line :class:`UsageError`
that names the file (and the line, for a bad row), so a user can find and fix it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from genkit_datasets.errors import UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def find_file(name: str, candidates: Sequence[Path], dataset: str, hint: str) -> Path:
    """The first of ``candidates`` that exists; else an error listing where ``name`` was looked for."""
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise UsageError(f"{dataset} annotation file {name} not found; looked in: {looked}. {hint}")


def read_lines(path: Path) -> list[str]:
    """The lines of a text file, without their LF or CRLF endings; line ``n`` is ``lines[n - 1]``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UsageError(f"{path}, line {line}: not UTF-8 text; restore the file from the original archive") from None
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def bad_row(path: Path, lineno: int, expected: str, line: str) -> UsageError:
    """The error for a malformed row: file, line number, what was expected and what was found."""
    shown = line if len(line) <= 80 else line[:77] + "..."
    return UsageError(
        f"{path}, line {lineno}: expected {expected}, found {shown!r}; "
        "the file looks truncated or edited, restore it from the original archive"
    )


def parse_int(path: Path, lineno: int, line: str, value: str, expected: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise bad_row(path, lineno, expected, line) from None


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (annotation files are tens of MB at most)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_images(folder: Path) -> list[str]:
    """Names of the image files directly in ``folder``, sorted (no stat calls: fast on 200k files)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(n for n in names if n.lower().endswith(IMAGE_SUFFIXES))


def has_images(folder: Path) -> bool:
    """Whether ``folder`` is a directory holding at least one image file (stops at the first)."""
    try:
        with os.scandir(folder) as entries:
            return any(e.name.lower().endswith(IMAGE_SUFFIXES) for e in entries)
    except OSError:
        return False


def fingerprint(tag: str, files: Iterable[Path], image_list: Iterable[str], options: dict) -> str:
    """A digest of the annotation files' bytes, the image files present and the reader's options.

    Paths are not part of it, so moving the data folder keeps its cache; editing an annotation
    file, adding or removing an image, or changing an option changes it.
    """
    digest = hashlib.sha256(f"{tag}\n{json.dumps(options, sort_keys=True)}\n".encode())
    for path in files:
        digest.update(f"{path.name}:{file_digest(path)}\n".encode())
    for name in image_list:
        digest.update(name.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()
