"""A picklable reader of image files for the cache builder's worker processes."""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
from PIL import Image

from genkit_datasets.preprocess import IMAGE_FORMATS, center_crop_resize


class ImageFileReader:
    """``reader(i, (H, W))``: decode ``folder/files[i]``, crop ``boxes[i]`` if given, centre crop, resize.

    Small when pickled (a folder and a list of names), so each worker receives it once. Grayscale,
    palette and CMYK files come out RGB. ``boxes`` are ``(x, y, width, height)`` in pixels (CUB's
    bounding boxes); the box is widened to whole pixels and clipped to the image.
    """

    def __init__(self, folder: str | os.PathLike, files: Sequence[str], boxes: np.ndarray | None = None):
        self.folder = os.fspath(folder)
        self.files = list(files)
        self.boxes = None if boxes is None else np.asarray(boxes, dtype=np.float64)

    def path(self, i: int) -> str:
        return os.path.join(self.folder, self.files[i])

    def __call__(self, i: int, size: tuple[int, int]) -> np.ndarray:
        with Image.open(self.path(i), formats=IMAGE_FORMATS) as image:
            if self.boxes is not None:
                image = image.crop(pixel_box(self.boxes[i], image.size))
            return center_crop_resize(image, size)


def pixel_box(box: Sequence[float], image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(x, y, w, h)`` floats to the smallest whole-pixel ``(left, top, right, bottom)`` holding it."""
    x, y, w, h = (float(v) for v in box)
    width, height = image_size
    left, top = max(0, math.floor(x)), max(0, math.floor(y))
    right, bottom = min(width, math.ceil(x + w)), min(height, math.ceil(y + h))
    if right <= left or bottom <= top:
        raise ValueError(f"bounding box {tuple(box)} lies outside the {width}x{height} image")
    return left, top, right, bottom
