"""CelebA (Large-scale CelebFaces Attributes): the on-disk layouts and annotation files.

Two layouts are accepted, and ``root`` may be the folder holding them or its parent (torchvision's
``root/celeba/`` convention):

* official: ``Anno/list_attr_celeba.txt``, ``Eval/list_eval_partition.txt`` and the images in
  ``Img/img_align_celeba/`` or ``img_align_celeba/`` beside ``Anno/``;
* flat (torchvision): ``list_attr_celeba.txt``, ``list_eval_partition.txt``, ``img_align_celeba/``.

The annotation files end lines with CRLF and pad values to 2-wide fields, so rows are split on
runs of white space. Values -1/1 become 0/1; items keep the files' order (the image ids).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genkit_datasets.annotations import bad_row, find_file, fingerprint, has_images, list_images, read_lines
from genkit_datasets.errors import UsageError
from genkit_datasets.image_files import ImageFileReader
from genkit_datasets.source import SourceIndex

URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
HINT = (f"CelebA is published at {URL} (Align&Cropped img_align_celeba.zip, Anno/, Eval/); "
        "download it there and pass --root with its folder")
ATTRIBUTES_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGES_DIR = "img_align_celeba"
SPLIT_CODES = {0: "train", 1: "valid", 2: "test"}
READER_VERSION = 1
CROP = ("centre crop: the largest centred box of the target aspect ratio (178x178, 20 rows off top and "
        "bottom, for a square size; none at 218x178), then bicubic resize")

#: The 40 attributes of ``list_attr_celeba.txt``, in file order.
ATTRIBUTE_NAMES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


@dataclass
class CelebALayout:
    """Where the files of one CelebA copy are."""

    base: Path
    attributes: Path
    partition: Path
    images: Path


@dataclass
class AttributeTable:
    """``list_attr_celeba.txt``: the count on line 1, the names, one row per image (values 0/1)."""

    declared_count: int
    names: list[str]
    files: list[str]
    values: np.ndarray


def locate(root: str | Path) -> CelebALayout:
    """Find the annotation files and the images folder under ``root`` (either layout)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UsageError(f"CelebA folder {root} does not exist. {HINT}")
    bases = [root] + ([root / "celeba"] if (root / "celeba").is_dir() else [])
    candidates = [p for b in bases for p in (b / "Anno" / ATTRIBUTES_FILE, b / ATTRIBUTES_FILE)]
    attributes = find_file(ATTRIBUTES_FILE, candidates, "CelebA", HINT)
    base = attributes.parent.parent if attributes.parent.name == "Anno" else attributes.parent
    partition = find_file(PARTITION_FILE, [base / "Eval" / PARTITION_FILE, base / PARTITION_FILE,
                                           base / "Anno" / PARTITION_FILE], "CelebA", HINT)
    return CelebALayout(base, attributes, partition, _images_folder(base))


def _images_folder(base: Path) -> Path:
    folders = [base / "Img" / IMAGES_DIR, base / IMAGES_DIR]
    for folder in folders:
        for candidate in (folder, folder / IMAGES_DIR):  # unzipping into a same-named folder nests it
            if has_images(candidate):
                return candidate
    archives = [p for p in (base / "Img" / f"{IMAGES_DIR}.zip", base / f"{IMAGES_DIR}.zip") if p.is_file()]
    if archives:
        raise UsageError(f"CelebA images are still zipped in {archives[0]}; unzip it there "
                         f"(it creates {IMAGES_DIR}/) and run again")
    raise UsageError(f"CelebA images folder {IMAGES_DIR}/ with JPEG files not found; looked in: "
                     f"{', '.join(str(f) for f in folders)}. {HINT}")


def parse_attributes(path: str | Path) -> AttributeTable:
    """Parse ``list_attr_celeba.txt`` exactly; the caller compares ``declared_count`` with the rows.

    A row that is not a file name followed by one -1/1 value per attribute is an error naming the
    file and the line number.
    """
    path = Path(path)
    lines = read_lines(path)
    if not lines or not lines[0].strip().isdigit():
        raise bad_row(path, 1, "the image count", lines[0] if lines else "")
    declared = int(lines[0].strip())
    names = lines[1].split() if len(lines) > 1 else []
    if not names:
        raise bad_row(path, 2, "the attribute names", lines[1] if len(lines) > 1 else "")
    width = len(names) + 1
    expected = f"an image name and {len(names)} values of 1 or -1"
    files: list[str] = []
    for lineno, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if len(parts) != width:
            raise bad_row(path, lineno, expected, line)
        files.append(parts[0])
    values = _values(path, lines, len(names), expected)
    return AttributeTable(declared, names, files, (values == 1).astype(np.uint8))


def _values(path: Path, lines: list[str], count: int, expected: str) -> np.ndarray:
    """The -1/1 table, parsed by numpy's C reader; a bad value is reported with its line."""
    rows = len(lines) - 2
    if rows == 0:
        return np.zeros((0, count), dtype=np.int8)
    try:  # from the file itself: numpy's C reader is fastest there (CRLF is white space to it)
        values = np.loadtxt(path, dtype=np.int8, skiprows=2, usecols=range(1, count + 1), comments=None, ndmin=2,
                            encoding="utf-8")
    except (ValueError, UnicodeDecodeError):
        values = None
    if values is None or values.shape != (rows, count) or not (np.abs(values) == 1).all():
        for lineno, line in enumerate(lines[2:], start=3):
            if any(v not in ("1", "-1") for v in line.split()[1:]):
                raise bad_row(path, lineno, expected, line)
        raise UsageError(f"{path}: cannot read the attribute values; restore the file from the original archive")
    return values


def parse_partition(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Parse ``list_eval_partition.txt``: file names and split codes (0 train, 1 valid, 2 test)."""
    path = Path(path)
    files: list[str] = []
    codes: list[int] = []
    for lineno, line in enumerate(read_lines(path), start=1):
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise bad_row(path, lineno, "an image name and a split code 0, 1 or 2", line)
        files.append(parts[0])
        codes.append(int(parts[1]))
    return files, np.asarray(codes, dtype=np.int8)


def celeba_index(root: str | Path) -> SourceIndex:
    """The CelebA source under ``root``: 40 attributes, splits train/valid/test as published."""
    layout = locate(root)
    table = parse_attributes(layout.attributes)
    if table.declared_count != len(table.files):
        raise UsageError(f"{layout.attributes} declares {table.declared_count} images on line 1 but holds "
                         f"{len(table.files)} rows; the file is truncated or edited, "
                         "restore it from the original archive")
    part_files, codes = parse_partition(layout.partition)
    codes = _align(table.files, part_files, codes, layout)
    splits = {name: np.flatnonzero(codes == code) for code, name in SPLIT_CODES.items()}
    present = list_images(layout.images)
    if table.files and set(present).isdisjoint(table.files):
        raise UsageError(f"{layout.images} holds none of the {len(table.files)} images listed in "
                         f"{layout.attributes}; pass --root with the CelebA folder that holds both")
    folder = os.fspath(layout.images)
    prefix = os.path.join(folder, "")
    return SourceIndex(
        attribute_names=table.names,
        attributes=table.values,
        splits=splits,
        reader=ImageFileReader(folder, table.files),
        fingerprint=fingerprint(f"celeba:v{READER_VERSION}", [layout.attributes, layout.partition], present, {}),
        keys=[prefix + f for f in table.files],
        crop=CROP,
    )


def _align(files: list[str], part_files: list[str], codes: np.ndarray, layout: CelebALayout) -> np.ndarray:
    """The split code of each image of the attribute file; the two files must list the same images."""
    if len(part_files) != len(files):
        raise UsageError(f"{layout.attributes} lists {len(files)} images but {layout.partition} lists "
                         f"{len(part_files)}; both files must come from the same CelebA release")
    if len(set(files)) != len(files):
        raise UsageError(f"{layout.attributes} lists some images twice; restore it from the original archive")
    if part_files == files:
        return codes
    position = {name: k for k, name in enumerate(part_files)}
    if len(position) != len(part_files):
        raise UsageError(f"{layout.partition} lists some images twice; restore it from the original archive")
    missing = next((name for name in files if name not in position), None)
    if missing is not None:
        raise UsageError(f"{missing} is listed in {layout.attributes} but not in {layout.partition}; "
                         "both files must come from the same CelebA release")
    return codes[[position[name] for name in files]]
