"""Image size parsing and the centre-crop-then-resize every file-based reader uses."""

from __future__ import annotations

import numpy as np
from PIL import Image

from genkit_datasets.errors import UsageError


def parse_image_size(value: str | int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """Parse ``64``, ``"64"``, ``"218x178"`` (height x width) or ``(218, 178)`` to ``(H, W)``."""
    if isinstance(value, (tuple, list)):
        parts = [str(v) for v in value]
    else:
        parts = str(value).lower().replace("×", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) <= 0:
        raise UsageError(
            f"image size {value!r} is not valid: use one positive integer (64) or HEIGHTxWIDTH (218x178)"
        )
    return sizes[0], sizes[1]


def center_crop_resize(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Crop the largest centred box with the target aspect ratio, resize it to ``size`` (H, W).

    Returns an RGB uint8 array (H, W, 3); grayscale and palette images are converted to RGB.
    Resizing uses PIL's bicubic filter with antialiasing (reducing_gap unset), so every reader
    and the tests produce identical pixels.
    """
    height, width = size
    image = image.convert("RGB")
    src_w, src_h = image.size
    target_ratio = width / height
    if src_w / src_h > target_ratio:  # too wide: trim left and right
        crop_w = max(1, round(src_h * target_ratio))
        left = (src_w - crop_w) // 2
        box = (left, 0, left + crop_w, src_h)
    else:  # too tall: trim top and bottom
        crop_h = max(1, round(src_w / target_ratio))
        top = (src_h - crop_h) // 2
        box = (0, top, src_w, top + crop_h)
    if box != (0, 0, src_w, src_h):
        image = image.crop(box)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)
