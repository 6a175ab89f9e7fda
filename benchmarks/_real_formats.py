"""Shared by the data-pipeline benchmarks: CelebA and CUB-200-2011 folders in the real on-disk formats.

Only the files genkit's readers use are written, in the releases' formats (CelebA: the count
line, the header with a trailing space, 2-wide -1/1 values, CRLF line endings; CUB: the
``images.txt`` family, ``attributes.txt`` beside ``CUB_200_2011/`` and the attribute labels).
The pixels come from a callback, so the benchmark decides what decoding costs. Nothing here
imports genkit or the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

#: ``image(k, rng) -> PIL image`` for the k-th file (0-based).
ImageMaker = Callable[[int, np.random.Generator], Image.Image]

CELEBA_ATTRIBUTES = 40
CUB_ATTRIBUTES = 312


@dataclass
class CelebAFolder:
    root: Path          # what to pass as --root
    image_dir: Path
    files: list[str]


@dataclass
class CubFolder:
    root: Path          # the folder holding CUB_200_2011/ (what to pass as --root)
    base: Path          # root / CUB_200_2011
    paths: list[str]    # images.txt paths, by id (id k+1 at position k)


def write_celeba(root: Path, counts: tuple[int, int, int], image: ImageMaker, seed: int = 0) -> CelebAFolder:
    """The official layout: ``Anno/``, ``Eval/`` and ``Img/img_align_celeba/`` with train/valid/test ``counts``."""
    rng = np.random.default_rng(seed)
    n = sum(counts)
    files = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    image_dir = root / "Img" / "img_align_celeba"
    for folder in (root / "Anno", root / "Eval", image_dir):
        folder.mkdir(parents=True, exist_ok=True)
    names = [f"Attribute_{a:02d}" for a in range(CELEBA_ATTRIBUTES)]
    values = rng.choice([-1, 1], size=(n, CELEBA_ATTRIBUTES))
    lines = [str(n), " ".join(names) + " "]
    lines += [f"{name} {row[0]}" + "".join(f" {v:2d}" for v in row[1:]) for name, row in zip(files, values.tolist())]
    (root / "Anno" / "list_attr_celeba.txt").write_bytes("".join(line + "\r\n" for line in lines).encode())
    partition = np.repeat([0, 1, 2], counts)
    (root / "Eval" / "list_eval_partition.txt").write_bytes(
        "".join(f"{f} {c}\r\n" for f, c in zip(files, partition.tolist())).encode())
    for k, name in enumerate(files):
        image(k, rng).save(image_dir / name, quality=90)
    return CelebAFolder(root, image_dir, files)


def write_cub(root: Path, n_classes: int, per_class: int, image: ImageMaker, seed: int = 0) -> CubFolder:
    """A CUB-200-2011 copy as the archive unpacks, with ``n_classes`` x ``per_class`` images."""
    rng = np.random.default_rng(seed)
    base = root / "CUB_200_2011"
    (base / "attributes").mkdir(parents=True, exist_ok=True)
    paths, classes = [], []
    for c in range(n_classes):
        folder = f"{c + 1:03d}.Species_{c + 1:03d}"
        (base / "images" / folder).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            paths.append(f"{folder}/Species_{c + 1:03d}_{len(paths) + 100}.jpg")
            classes.append(c + 1)
    n = len(paths)

    def write(path: Path, lines: list[str]) -> None:
        path.write_text("".join(line + "\n" for line in lines))

    write(base / "images.txt", [f"{k + 1} {p}" for k, p in enumerate(paths)])
    write(base / "classes.txt", [f"{c + 1} {c + 1:03d}.Species_{c + 1:03d}" for c in range(n_classes)])
    write(base / "image_class_labels.txt", [f"{k + 1} {c}" for k, c in enumerate(classes)])
    write(base / "train_test_split.txt", [f"{k + 1} {int(k % 2 == 0)}" for k in range(n)])
    write(root / "attributes.txt", [f"{a + 1} has_part::value_{a + 1}" for a in range(CUB_ATTRIBUTES)])
    present = rng.integers(0, 2, (n, CUB_ATTRIBUTES))
    certainty = rng.integers(1, 5, (n, CUB_ATTRIBUTES))
    write(base / "attributes" / "image_attribute_labels.txt",
          [f"{k + 1} {a + 1} {present[k, a]} {certainty[k, a]} {rng.uniform(0, 40):.4f}"
           for k in range(n) for a in range(CUB_ATTRIBUTES)])
    for k, rel in enumerate(paths):
        image(k, rng).save(base / "images" / rel, quality=85)
    return CubFolder(root, base, paths)
