"""A user's own image for an edit: decoded within a pixel bound the way the datasets read files, and
its attributes read by the attribute classifier (``genkit edit --image``, the page's upload)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from genkit.errors import UsageError

#: the most pixels genkit decodes from a user's image (a decompression bomb declares far more)
MAX_IMAGE_PIXELS = 8192 * 8192


def read_image(source: str | Path | bytes, size: tuple[int, int], what: str | None = None,
               max_pixels: int = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """An image file (a path, or its bytes) as uint8 (3, H, W) at ``size``, the way the datasets read files.

    Decoded by Pillow only, after its header says it has at most ``max_pixels`` pixels; every
    mode genkit reads is converted faithfully (16-bit, palette, CMYK, transparency) by the same
    centre crop and resize as the dataset readers (:func:`genkit.plugin_api.center_crop_resize`);
    anything else is a one-line :class:`UsageError` naming the file and why.
    """
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    from genkit_datasets.preprocess import IMAGE_FORMATS, center_crop_resize

    if isinstance(source, (bytes, bytearray)):
        what = what or "the image"
        if not source:
            raise UsageError(f"{what} is empty (0 bytes); choose an image file")
        stream: Any = io.BytesIO(source)
    else:
        path = Path(source)
        what = what or f"--image {path}"
        if not path.exists():
            raise UsageError(f"{what} does not exist; give the path of an image file")
        if path.is_dir():
            raise UsageError(f"{what} is a folder; give the path of an image file")
        if path.stat().st_size == 0:
            raise UsageError(f"{what} is empty (0 bytes); give an image file")
        stream = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream, formats=IMAGE_FORMATS) as image:
                width, height = image.size
                if width * height > max_pixels or width < 1 or height < 1:
                    raise UsageError(f"{what} is {width}x{height} pixels, more than the {_megapixels(max_pixels)} "
                                     "genkit decodes; scale it down first")
                image.load()
                pixels = center_crop_resize(image, tuple(size))
    except UsageError:
        raise
    except UnidentifiedImageError:
        raise UsageError(f"{what} is not an image genkit reads; give a {', '.join(IMAGE_FORMATS[:-1])} or "
                         f"{IMAGE_FORMATS[-1]} file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UsageError(f"{what} declares more pixels than genkit decodes ({_megapixels(max_pixels)}); it may be a "
                         "decompression bomb: scale it down first") from None
    except ValueError as exc:  # a mode that cannot be converted faithfully: named by to_rgb
        raise UsageError(f"{what}: {exc}") from None
    except (OSError, SyntaxError, EOFError) as exc:
        raise UsageError(f"{what} cannot be decoded ({exc}); it may be truncated or damaged") from None
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.0f} megapixels"


# --- attributes of an image from the classifier ---------------------------------------------------

@torch.no_grad()
def read_attributes(classifier: torch.nn.Module, images: torch.Tensor, names: Sequence[str],
                    exclusive_groups: Sequence[str] = ()) -> torch.Tensor:
    """The classifier's reading of ``images`` as 0/1 vectors (B, A): an attribute is on where its logit is
    positive, and each exclusive family gets exactly its most likely value."""
    device = next(classifier.parameters()).device
    batch = images.to(device)
    batch = batch.float().div(255) if batch.dtype == torch.uint8 else batch.float()
    logits = classifier(batch).float().cpu()
    vectors = (logits > 0).float()
    for group in exclusive_groups:
        columns = [i for i, name in enumerate(names) if name.startswith(f"{group}::")]
        if columns:
            best = logits[:, columns].argmax(dim=1)
            vectors[:, columns] = 0
            vectors[torch.arange(len(vectors)), torch.tensor(columns)[best]] = 1
    return vectors


