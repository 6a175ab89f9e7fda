"""Sample grids of any size that fits: bounded before allocating, decoded in batches.

``genkit sample --n N`` decodes its N images a batch at a time straight into the uint8 grid it
writes, so memory holds the grid (one byte per pixel and channel) and one batch, never N float
images. A grid that cannot fit in the memory available is refused before anything is drawn,
with the largest ``--n`` that fits in the message. What is drawn (conditions, noise) and how
(``Run.batches``, :mod:`genkit.sampling.draw`) is the caller's; this module only bounds and paints.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image

from genkit.errors import UsageError
from genkit.runtime.memory import ALLOCATION_SHARE, available_bytes, format_bytes, items_that_fit
from genkit.store.files import atomic_path

#: the padding between grid cells, as torchvision's make_grid (white)
PADDING = 2
#: PNG (and Pillow) cannot hold an image wider or taller than this
MAX_GRID_SIDE = 2**31 - 1
#: what a grid made from float images (``save_grid``) costs per pixel and channel at its peak: the
#: images, their clamped copy, make_grid's float grid, save_image's scaled copy and its bytes
#: (12.5 measured by benchmarks/sample_memory.py for ``genkit sample --vary``)
FLOAT_GRID_BYTES_PER_VALUE = 14


def grid_shape(count: int, nrow: int, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """``(height, width, channels)`` of the grid torchvision's ``make_grid`` draws for ``count`` images."""
    channels, height, width = image_shape
    if count == 1:
        return height, width, channels
    cols = min(nrow, count)
    rows = math.ceil(count / cols)
    return rows * (height + PADDING) + PADDING, cols * (width + PADDING) + PADDING, channels


def check_grid(count: int, nrow: int, image_shape: tuple[int, int, int], asked: str | None = None,
               bytes_per_value: float = 1.0, extra_per_image: int = 0, columns_flag: str | None = "--nrow") -> None:
    """Refuse a grid of ``count`` images that cannot fit in memory (or in a PNG), naming the largest that can.

    ``bytes_per_value`` is what the grid costs per pixel and channel while it is made (1 for the
    streamed uint8 grid; more where float images are kept); ``extra_per_image`` adds per-image
    costs such as the noise. ``asked`` names the request in the message (``--n N``);
    ``columns_flag`` is the option that sets the images per row, where the user chooses it (None
    for grids whose columns follow from what is drawn, such as ``--vary`` and ``--interpolate``).
    """
    asked = asked or f"--n {count}"
    height, width, channels = grid_shape(count, nrow, image_shape)
    if max(height, width) > MAX_GRID_SIDE:
        raise UsageError(f"{asked} makes a grid {height}x{width} pixels, more than a PNG can hold "
                         f"({MAX_GRID_SIDE} a side); ask for fewer images"
                         + (f" or a larger {columns_flag}" if columns_flag else ""))
    needed = height * width * channels * bytes_per_value + count * extra_per_image
    available = available_bytes()
    if needed <= ALLOCATION_SHARE * available:
        return
    _, h, w = image_shape
    per_image = (h + PADDING) * (w + PADDING) * channels * bytes_per_value + extra_per_image
    fits = items_that_fit(int(per_image), available=available)
    raise UsageError(f"{asked} would make a grid of {format_bytes(needed)} ({count} images of {h}x{w}), more "
                     f"than the {format_bytes(ALLOCATION_SHARE * available)} genkit allows itself "
                     f"({ALLOCATION_SHARE:.0%} of the {format_bytes(available)} of memory available); ask for at most "
                     f"{fits} images per grid")


@torch.no_grad()
def write_grid(batches: Iterable[tuple[int, torch.Tensor]], count: int, nrow: int, image_shape: tuple[int, int, int],
               path: str | Path) -> Path:
    """``count`` images of ``image_shape`` (C, H, W), arriving as ``(start, images)`` batches (``Run.batches``),
    painted one batch at a time into a PNG grid at ``path``.

    The same pixels as ``save_grid(images, nrow)`` of all of them at once; call :func:`check_grid`
    first, before drawing the conditions and the noise.
    """
    channels, height, width = image_shape
    grid_h, grid_w, _ = grid_shape(count, nrow, image_shape)
    canvas = np.full((grid_h, grid_w, channels), 255, dtype=np.uint8)
    cols = min(nrow, count)
    for start, images in batches:
        pixels = images.cpu().clamp(0, 1).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for k, image in enumerate(pixels, start=start):
            if count == 1:
                canvas[:] = image
                break
            top = (k // cols) * (height + PADDING) + PADDING
            left = (k % cols) * (width + PADDING) + PADDING
            canvas[top:top + height, left:left + width] = image
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(canvas.squeeze(-1) if channels == 1 else canvas).save(tmp, format="png")
    return path
