"""Image size parsing, faithful conversion of every Pillow mode to 8-bit RGB, and the
centre-crop-then-resize every file-based reader uses."""

from __future__ import annotations

import numpy as np
from PIL import Image

from genkit_datasets.errors import UsageError

#: the largest image side genkit accepts: a 8192x8192 RGB image is 200 MB as uint8 and 800 MB as
#: float32, so a batch of them is already more than most machines hold
MAX_IMAGE_SIDE = 8192
#: the formats genkit decodes, all by Pillow's own code: never EPS or PostScript (Pillow hands those to
#: Ghostscript, an external program running what the file says) nor any other format Pillow sniffs
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
#: what transparent pixels are composited over (white, as a browser shows a transparent PNG)
BACKGROUND = (255, 255, 255)
#: modes converted to RGB by Pillow exactly (no range or colour-space guess involved)
_DIRECT = {"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV"}
_WITH_ALPHA = {"LA", "La", "PA", "RGBA", "RGBa"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


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
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:60] + "…"
        raise UsageError(
            f"image size {shown} is not valid: use one positive integer (64) or HEIGHTxWIDTH (218x178)"
        )
    if max(sizes) > MAX_IMAGE_SIDE:
        raise UsageError(f"image size {sizes[0]}x{sizes[1]} is larger than genkit's maximum of {MAX_IMAGE_SIDE} "
                         "pixels a side; choose a smaller size, for example 64 or 218x178")
    return sizes[0], sizes[1]


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, converted faithfully, or a ``ValueError`` naming its mode.

    * 1, L, P, RGB, RGBX, CMYK, YCbCr, HSV: Pillow's own conversion.
    * Transparency (LA, PA, RGBA, a palette or a colour key with transparency): composited over
      white (:data:`BACKGROUND`), as a browser shows it.
    * 16-bit grayscale (I;16 and its byte orders): scaled from 0..65535 to 0..255 (v / 257,
      rounded), not clipped at 255.
    * 32-bit integer (I): read as 16-bit when every value lies in 0..65535 (how Pillow opens
      16-bit PNGs and TIFFs), refused otherwise (its range cannot be known).
    * 32-bit float (F): values in [0, 1] scaled to 0..255; refused otherwise.
    * Anything else (LAB, multi-channel 16-bit modes Pillow cannot convert): refused by name.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _WITH_ALPHA or (mode in ("P", "L", "RGB") and "transparency" in image.info):
        try:
            rgba = image.convert("RGBA")
        except ValueError:
            raise ValueError(f"image mode {mode!r} (premultiplied alpha) cannot be converted; save it as RGBA") from None
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _DIRECT:
        return image.convert("RGB")
    if mode in _SIXTEEN_BIT or mode == "I":
        values = np.asarray(image).astype(np.int64)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"image mode 'I' (32-bit integer) with values from {values.min()} to {values.max()}: "
                             "genkit reads 32-bit images only as 16-bit (0..65535); save it as 8 or 16-bit")
        return _gray_to_rgb((values * 255 + 32767) // 65535)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if values.size and not (np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0):
            low, high = np.nanmin(values), np.nanmax(values)
            raise ValueError(f"image mode 'F' (32-bit float) with values from {low:g} to {high:g}: genkit reads float "
                             "images as 0..1; save it as 8-bit or scale it to 0..1")
        return _gray_to_rgb(np.rint(values * 255))
    raise ValueError(f"image mode {mode!r} cannot be converted to RGB faithfully; save the image as 8-bit RGB "
                     "(for example with an image editor or PIL's ImageCms)")


def _gray_to_rgb(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8)).convert("RGB")


def center_crop_resize(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Crop the largest centred box with the target aspect ratio, resize it to ``size`` (H, W).

    Returns an RGB uint8 array (H, W, 3); every other mode is converted first by :func:`to_rgb`
    (faithfully, or refused by name).
    Resizing uses PIL's bicubic filter with antialiasing (reducing_gap unset), so every reader
    and the tests produce identical pixels.
    """
    height, width = size
    image = to_rgb(image)
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
