"""CUB-200-2011 (Caltech-UCSD Birds): the unpacked archive and its annotation files.

``root`` is the folder holding ``CUB_200_2011/`` (where the archive puts ``attributes.txt``) or
``CUB_200_2011/`` itself; ``attributes.txt`` is looked for beside ``CUB_200_2011/``, inside it and
in ``CUB_200_2011/attributes/``. Rows of ``image_attribute_labels.txt`` are read by their first
four fields (a few real rows carry a sixth). Image paths are used exactly as ``images.txt`` spells
them (folder and file names differ in case).

The condition of an image: the 312 attributes in ``attributes.txt`` order, then the species as a
one-hot over ``classes.txt`` (``species::<Name>``), 512 values. Splits: ``test`` and ``train``
from ``train_test_split.txt``, and ``valid``: every ``valid_every``-th training image in id order
(the 10th, 20th, ...), held out of ``train``.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genkit_datasets.annotations import bad_row, find_file, fingerprint, list_images, parse_int, read_lines
from genkit_datasets.errors import UsageError
from genkit_datasets.image_files import ImageFileReader
from genkit_datasets.source import SourceIndex

URL = "https://www.vision.caltech.edu/datasets/cub_200_2011/"
HINT = (f"CUB-200-2011 is published at {URL} (CUB_200_2011.tgz plus attributes.txt); unpack it and "
        "pass --root with the folder holding CUB_200_2011/")
FOLDER = "CUB_200_2011"
READER_VERSION = 1
CERTAINTIES = {1: "not visible", 2: "guessing", 3: "probably", 4: "definitely"}
CROP = "centre crop: the largest centred box of the target aspect ratio, then bicubic resize"
BBOX_CROP = ("the bird's bounding box (bounding_boxes.txt, widened to whole pixels), then the largest "
             "centred box of the target aspect ratio inside it, then bicubic resize")


@dataclass
class CubLayout:
    """Where the files of one CUB-200-2011 copy are."""

    base: Path
    attributes: Path

    def file(self, name: str) -> Path:
        return find_file(name, [self.base / name], "CUB-200-2011", HINT)

    @property
    def labels(self) -> Path:
        return find_file("image_attribute_labels.txt", [self.base / "attributes" / "image_attribute_labels.txt"],
                         "CUB-200-2011", HINT)

    @property
    def images(self) -> Path:
        return self.base / "images"


def locate(root: str | Path) -> CubLayout:
    """Find ``CUB_200_2011/`` at or under ``root``, and ``attributes.txt`` in any of its three places."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UsageError(f"CUB-200-2011 folder {root} does not exist. {HINT}")
    images_txt = find_file("images.txt", [root / "images.txt", root / FOLDER / "images.txt"], "CUB-200-2011", HINT)
    base = images_txt.parent
    attributes = find_file("attributes.txt", [base.parent / "attributes.txt", base / "attributes.txt",
                                              base / "attributes" / "attributes.txt"], "CUB-200-2011", HINT)
    return CubLayout(base, attributes)


def _pairs(path: Path, expected: str, fields: int = 2, rest: bool = False,
           allowed: tuple[str, ...] | None = None) -> dict[int, list[str]]:
    """``{id: other fields}`` of a ``<id> ...`` file; ``rest`` keeps the text after the id whole.

    ``allowed`` lists the values the second field may take; ``None`` allows any.
    """
    table: dict[int, list[str]] = {}
    for lineno, line in enumerate(read_lines(path), start=1):
        parts = line.split(None, 1) if rest else line.split()
        if len(parts) != fields or (allowed is not None and parts[1] not in allowed):
            raise bad_row(path, lineno, expected, line)
        key = parse_int(path, lineno, line, parts[0], expected)
        if key in table:
            raise bad_row(path, lineno, f"{expected} with an id not used before", line)
        table[key] = parts[1:]
    return table


def parse_named(path: str | Path) -> tuple[list[int], list[str]]:
    """``attributes.txt`` or ``classes.txt``: ids and names, in file order."""
    path = Path(path)
    table = _pairs(path, "'<id> <name>'", rest=True)
    return list(table), [v[0].strip() for v in table.values()]


def species_name(class_name: str) -> str:
    """``001.Black_footed_Albatross`` to ``Black_footed_Albatross``."""
    return re.sub(r"^\d+\.", "", class_name)


def parse_labels(path: str | Path) -> np.ndarray:
    """``image_attribute_labels.txt`` as int32 ``(rows, 4)``: image id, attribute id, is_present, certainty.

    Reads the first four fields of each row (the time and, in a few real rows, a sixth field are
    ignored) with numpy's C reader; a row it cannot read, or a value out of range, is reported
    with its line number.
    """
    path = Path(path)
    expected = "'<image_id> <attribute_id> <is_present 0/1> <certainty_id 1-4> <time>'"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns about an empty file; reported below
            table = np.loadtxt(path, dtype=np.int32, usecols=range(4), comments=None, ndmin=2, encoding="utf-8")
    except (ValueError, UnicodeDecodeError):
        table = None
    if table is not None and _labels_ok(table):
        return table
    lines = read_lines(path)
    if not lines:
        raise UsageError(f"{path} is empty; restore it from the original archive")
    for lineno, line in enumerate(lines, start=1):
        parts = line.split()
        try:
            values = [int(v) for v in parts[:4]]
        except ValueError:
            raise bad_row(path, lineno, expected, line) from None
        if len(values) < 4 or not _labels_ok(np.array([values])):
            raise bad_row(path, lineno, expected, line)
    raise UsageError(f"{path}: cannot be read as rows of whole numbers; restore it from the original archive")


def _labels_ok(table: np.ndarray) -> bool:
    return bool(len(table) and (table[:, :2] > 0).all() and np.isin(table[:, 2], (0, 1)).all()
                and ((table[:, 3] >= 1) & (table[:, 3] <= 4)).all())


def cub_index(root: str | Path, min_certainty: int = 0, crop_bbox: bool = False, valid_every: int = 10) -> SourceIndex:
    """The CUB source under ``root``: attributes then species one-hot; splits train/valid/test.

    ``min_certainty`` N > 0 counts an attribute only where ``is_present`` is 1 and its certainty
    is at least N (3 = probably); ``crop_bbox`` crops to the bird's box before the centre crop.
    """
    layout = locate(root)
    images_txt, classes_txt = layout.file("images.txt"), layout.file("classes.txt")
    class_txt, split_txt = layout.file("image_class_labels.txt"), layout.file("train_test_split.txt")
    labels_txt = layout.labels
    images = _pairs(images_txt, "'<image_id> <relative path>'", rest=True)
    ids = np.array(sorted(images), dtype=np.int64)
    paths = [images[i][0].strip() for i in ids]
    class_ids, class_names = parse_named(classes_txt)
    attribute_ids, attribute_names = parse_named(layout.attributes)

    class_table = _pairs(class_txt, "'<image_id> <class_id>'", allowed=tuple(str(c) for c in class_ids))
    image_class = _per_image(class_table, ids, images_txt, class_txt)
    class_column = {c: k for k, c in enumerate(class_ids)}
    is_train = _per_image(_pairs(split_txt, "'<image_id> <1 train / 0 test>'", allowed=("0", "1")), ids,
                          images_txt, split_txt)
    present = _attribute_table(labels_txt, ids, attribute_ids, min_certainty)
    species = np.zeros((len(ids), len(class_ids)), dtype=np.uint8)
    species[np.arange(len(ids)), [class_column[c] for c in image_class]] = 1

    boxes = _boxes(layout, ids, images_txt) if crop_bbox else None
    on_disk = _image_list(layout.images)
    if paths and on_disk.isdisjoint(paths):
        raise UsageError(f"{layout.images} holds none of the {len(paths)} images listed in {images_txt}; "
                         "pass --root with the folder holding CUB_200_2011/")
    sources = [images_txt, classes_txt, class_txt, split_txt, layout.attributes, labels_txt]
    if crop_bbox:
        sources.append(layout.base / "bounding_boxes.txt")
    options = {"min_certainty": min_certainty, "crop_bbox": crop_bbox, "valid_every": valid_every}
    folder = os.fspath(layout.images)
    return SourceIndex(
        attribute_names=attribute_names + [f"species::{species_name(n)}" for n in class_names],
        attributes=np.concatenate([present, species], axis=1),
        splits=_splits(np.asarray(is_train), valid_every),
        reader=ImageFileReader(folder, paths, boxes),
        fingerprint=fingerprint(f"cub:v{READER_VERSION}", sources, sorted(on_disk), options),
        keys=[os.path.join(folder, p) for p in paths],
        crop=BBOX_CROP if crop_bbox else CROP,
        exclusive_groups=["species"],  # one species per bird; the has_* groups may hold several values
    )


def _per_image(table: dict[int, list[str]], ids: np.ndarray, images_txt: Path, path: Path) -> list[int]:
    """One integer per image id of ``images.txt``; the file must list exactly those ids."""
    if len(table) != len(ids):
        raise UsageError(f"{images_txt} lists {len(ids)} images but {path} lists {len(table)}; "
                         "both files must come from the same CUB-200-2011 copy")
    values = []
    for i in ids.tolist():
        if i not in table:
            raise UsageError(f"image {i} of {images_txt} is missing from {path}")
        values.append(int(table[i][0]))
    return values


def _attribute_table(path: Path, ids: np.ndarray, attribute_ids: list[int], min_certainty: int) -> np.ndarray:
    """``(images, attributes)`` 0/1 from ``image_attribute_labels.txt``: one row per pair, no gaps."""
    rows = parse_labels(path)
    count, width = len(ids), len(attribute_ids)
    image_row = _lookup(ids, rows[:, 0])
    attribute_col = _lookup(np.asarray(attribute_ids, dtype=np.int64), rows[:, 1])
    if (image_row < 0).any():
        raise UsageError(f"{path} has rows for image {int(rows[np.argmax(image_row < 0), 0])}, "
                         "which images.txt does not list")
    if (attribute_col < 0).any():
        raise UsageError(f"{path} has rows for attribute {int(rows[np.argmax(attribute_col < 0), 1])}, "
                         "which attributes.txt does not list")
    seen = np.bincount(image_row * width + attribute_col, minlength=count * width)
    if (seen != 1).any():
        k = int(np.argmax(seen != 1))
        raise UsageError(f"{path} has {seen[k]} rows for image {ids[k // width]} and attribute "
                         f"{attribute_ids[k % width]}, expected 1 (one row per image and attribute of "
                         f"attributes.txt, {count * width} in all; it has {len(rows)})")
    on = rows[:, 2] == 1
    if min_certainty:
        on &= rows[:, 3] >= min_certainty
    table = np.zeros((count, width), dtype=np.uint8)
    table[image_row, attribute_col] = on
    return table


def _lookup(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Position of each value in ``keys`` (positive ids), -1 where absent."""
    lut = np.full(int(max(keys.max(initial=0), values.max(initial=0))) + 1, -1, dtype=np.int64)
    lut[keys] = np.arange(len(keys))
    return lut[values]


def _boxes(layout: CubLayout, ids: np.ndarray, images_txt: Path) -> np.ndarray:
    path = layout.file("bounding_boxes.txt")
    expected = "'<image_id> <x> <y> <width> <height>'"
    table: dict[int, list[float]] = {}
    for lineno, line in enumerate(read_lines(path), start=1):
        parts = line.split()
        try:
            key, box = int(parts[0]), [float(v) for v in parts[1:]]
        except (ValueError, IndexError):
            raise bad_row(path, lineno, expected, line) from None
        if len(box) != 4 or box[2] <= 0 or box[3] <= 0:
            raise bad_row(path, lineno, expected, line)
        table[key] = box
    if len(table) != len(ids) or any(i not in table for i in ids.tolist()):
        raise UsageError(f"{images_txt} lists {len(ids)} images but {path} has boxes for {len(table)} "
                         "(or for other ids); both files must come from the same CUB-200-2011 copy")
    return np.array([table[i] for i in ids.tolist()], dtype=np.float64)


def _image_list(folder: Path) -> set[str]:
    """``class_folder/file`` of every image under ``images/`` (one listing per class folder)."""
    found: set[str] = set()
    try:
        with os.scandir(folder) as entries:
            subfolders = sorted(e.name for e in entries if e.is_dir())
    except OSError:
        return found
    for sub in subfolders:
        found.update(f"{sub}/{name}" for name in list_images(folder / sub))
    return found


def _splits(is_train: np.ndarray, valid_every: int) -> dict[str, np.ndarray]:
    """train/valid/test indices in id order; ``valid`` is every ``valid_every``-th training image."""
    train = np.flatnonzero(is_train == 1)
    splits = {"train": train, "test": np.flatnonzero(is_train == 0)}
    if valid_every > 0:
        held = np.zeros(len(train), dtype=bool)
        held[valid_every - 1::valid_every] = True
        if held.any():
            splits["train"], splits["valid"] = train[~held], train[held]
    return splits
