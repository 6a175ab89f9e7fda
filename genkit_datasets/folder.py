"""``folder``: your own images, labelled by an ``attributes.csv`` beside them.

The CSV's header is ``filename,<attr1>,<attr2>,...``; each row names one image by its path
relative to the folder and gives each attribute as ``0``/``1`` or ``-1``/``+1`` (both map to
0/1). An optional column named ``split`` assigns ``train``, ``valid`` (or ``val``) or ``test`` per
row. Without it the split is deterministic and independent of row order: images are ranked by the
SHA-256 of their file name, the first ``valid_fraction`` of the ranking is ``valid``, the next
``test_fraction`` is ``test``, the rest ``train``. The cache's fingerprint covers the CSV's bytes
and each listed image's size and modification time, so editing either rebuilds the cache.

Every problem in the CSV is a :class:`UsageError` naming the file, the line and the value, raised
while scanning, before any cache is written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import stat
from pathlib import Path

import numpy as np

from genkit_datasets.annotations import fingerprint
from genkit_datasets.errors import UsageError, shown
from genkit_datasets.image_files import ImageFileReader
from genkit_datasets.source import SourceIndex

CSV_NAME = "attributes.csv"
FILENAME_COLUMN = "filename"
SPLIT_COLUMN = "split"
VALUES = {"0": 0, "1": 1, "-1": 0, "+1": 1}
SPLIT_NAMES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}


def folder_index(root: Path, csv_name: str = CSV_NAME, valid_fraction: float = 0.1,
                 test_fraction: float = 0.1) -> SourceIndex:
    """Read ``root/csv_name`` and check that every image it names exists."""
    root = Path(root)
    if root.is_file():
        raise UsageError(f"--root {root} is a file; pass the folder that holds {csv_name}")
    csv_path = root / csv_name
    if not csv_path.is_file():
        raise UsageError(
            f"{csv_path} does not exist; the folder dataset needs a CSV with the header "
            f"{FILENAME_COLUMN},<attr1>,<attr2>,... and one row per image"
        )
    raw = csv_path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a spreadsheet's byte-order mark is not part of the header
    except UnicodeDecodeError as exc:
        raise UsageError(f"{csv_path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") from None
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, None)
    if header is None:
        raise UsageError(f"{csv_path} is empty; its first line must be {FILENAME_COLUMN},<attr1>,<attr2>,...")
    names, split_col = _parse_header(csv_path, [h.strip() for h in header])

    files: list[str] = []
    table: list[list[int]] = []
    split_of: list[str] = []
    signature: list[str] = []
    first_line: dict[str, int] = {}
    for row in rows:
        line = rows.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise UsageError(f"{csv_path}, line {line}: {len(row)} values, but the header has {len(header)} columns")
        name = row[0].strip()
        where = f"{csv_path}, line {line}"
        if not name or os.path.isabs(name) or _escapes(name):
            raise UsageError(f"{where}: file name {shown(name)} must be a path inside {root}, relative to it "
                             "(no leading / and no .. that leaves the folder); fix the path or remove the row")
        if name in first_line:
            raise UsageError(
                f"{where}: image {name!r} is listed again (first on line {first_line[name]}); keep one row")
        first_line[name] = line
        try:
            file_stat = (root / name).stat()
        except OSError:
            file_stat = None
        if file_stat is None or not stat.S_ISREG(file_stat.st_mode):
            raise UsageError(f"{where}: image {name!r} does not exist ({root / name}); fix the path or remove the row")
        vector = []
        for column, attr in names:
            value = row[column].strip()
            if value not in VALUES:
                raise UsageError(
                    f"{where}: value {value!r} for attribute {attr!r} is not one of 0, 1, -1, +1; fix the value"
                )
            vector.append(VALUES[value])
        if split_col is not None:
            label = row[split_col].strip()
            if label.lower() not in SPLIT_NAMES:
                raise UsageError(f"{where}: split {label!r} is not one of train, valid (or val), test; fix the value")
            split_of.append(SPLIT_NAMES[label.lower()])
        files.append(name)
        table.append(vector)
        signature.append(f"{name}\0{file_stat.st_size}\0{file_stat.st_mtime_ns}")  # an edited image rebuilds
    if not files:
        raise UsageError(f"{csv_path} lists no images; add one row per image below the header")

    if split_col is not None:
        labels = np.array(split_of)
        splits = {s: np.flatnonzero(labels == s) for s in ("train", "valid", "test")}
    else:
        splits = hash_splits(files, valid_fraction, test_fraction)
    splits = {s: idx for s, idx in splits.items() if len(idx)}
    if "train" not in splits:
        raise UsageError(f"{csv_path} assigns no image to the train split; label some rows train")

    options = {"valid_fraction": valid_fraction, "test_fraction": test_fraction}
    return SourceIndex(
        attribute_names=[attr for _, attr in names],
        attributes=np.array(table, dtype=np.uint8).reshape(len(files), len(names)),
        splits=splits,
        reader=ImageFileReader(root, files),
        fingerprint=fingerprint("folder:v1", [csv_path], signature, options),
        keys=[str(root / f) for f in files],
    )


def _escapes(name: str) -> bool:
    """True when ``name`` leads out of the folder (``../x.png``, ``a/../../x.png``), read as written."""
    parts = os.path.normpath(name.replace("\\", "/")).split("/")
    return bool(parts) and parts[0] == ".."


def _parse_header(csv_path: Path, header: list[str]) -> tuple[list[tuple[int, str]], int | None]:
    """``[(column, attribute name)]`` and the column of ``split`` (or None), checked."""
    where = f"{csv_path}, line 1"
    if not header or header[0] != FILENAME_COLUMN:
        first = header[0] if header else ""
        raise UsageError(
            f"{where}: the first column is {first!r}; the header must be {FILENAME_COLUMN},<attr1>,<attr2>,..."
        )
    seen: dict[str, int] = {}
    names: list[tuple[int, str]] = []
    split_col = None
    for column, name in enumerate(header[1:], start=1):
        if name in seen:
            raise UsageError(
                f"{where}: column {name!r} appears twice (columns {seen[name] + 1} and {column + 1}); "
                "rename or remove one"
            )
        seen[name] = column
        if name == SPLIT_COLUMN:
            split_col = column
            continue
        if not name or name[0] in "+-" or "," in name or name == FILENAME_COLUMN:
            raise UsageError(
                f"{where}: attribute name {name!r} is not usable; names must be non-empty, "
                "must not start with + or - and must not contain a comma"
            )
        names.append((column, name))
    if not names:
        raise UsageError(f"{where}: no attribute columns; the header must be {FILENAME_COLUMN},<attr1>,<attr2>,...")
    return names, split_col


def hash_splits(files: list[str], valid_fraction: float, test_fraction: float) -> dict[str, np.ndarray]:
    """Rank files by SHA-256 of their name: ``valid`` first, then ``test``, the rest ``train``.

    The counts are rounded up, so any set of 3 or more images has at least one validation and one
    test image. Indices come back in CSV order.
    """
    count = len(files)
    ranked = sorted(range(count), key=lambda i: hashlib.sha256(files[i].encode()).digest())
    n_valid = min(count - 1, math.ceil(count * valid_fraction))
    n_test = min(count - 1 - n_valid, math.ceil(count * test_fraction))
    return {
        "train": np.sort(np.array(ranked[n_valid + n_test:], dtype=np.int64)),
        "valid": np.sort(np.array(ranked[:n_valid], dtype=np.int64)),
        "test": np.sort(np.array(ranked[n_valid:n_valid + n_test], dtype=np.int64)),
    }
