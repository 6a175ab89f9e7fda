"""Dataset ``cub``: CUB-200-2011 birds, 312 attributes plus the species one-hot (files you download)."""

from __future__ import annotations

from pathlib import Path

import genkit
from genkit.plugin_api import CUB_CERTAINTIES, CUB_HINT, cub_index


class CubSource:
    name = "cub"
    description = "CUB-200-2011 birds, 312 attributes + 200 species one-hot, splits train/valid/test"
    default_image_size = (64, 64)
    needs_root = True
    obtain_hint = CUB_HINT

    def __init__(self, min_certainty: int = 0, crop_bbox: bool = False, valid_every: int = 10):
        self.min_certainty = min_certainty
        self.crop_bbox = crop_bbox
        self.valid_every = valid_every

    def scan(self, root: Path | None = None) -> genkit.SourceIndex:
        if root is None:
            raise genkit.UsageError(f"dataset 'cub' needs its files: pass --root PATH. {CUB_HINT}")
        return cub_index(root, min_certainty=self.min_certainty, crop_bbox=self.crop_bbox,
                         valid_every=self.valid_every)


def build(min_certainty: int = 0, crop_bbox: bool = False, valid_every: int = 10) -> CubSource:
    """CUB-200-2011 birds: 312 attributes and the species (512 values); download it yourself.

    ``min_certainty`` N (1-4; 0 = off) counts an attribute only when marked present with certainty
    at least N (3 = probably); ``crop_bbox`` crops to the bird's box first; ``valid_every`` K holds
    every K-th training image out as ``valid`` (0 = no valid split).
    """
    if isinstance(min_certainty, bool) or min_certainty not in (0, *CUB_CERTAINTIES):
        raise genkit.UsageError(
            f"cub option min_certainty={min_certainty!r} is not valid; use 0 (off) or 1-4 "
            f"({', '.join(f'{k} {v}' for k, v in CUB_CERTAINTIES.items())})")
    if crop_bbox not in (True, False):
        raise genkit.UsageError(f"cub option crop_bbox={crop_bbox!r} is not valid; use true or false")
    if isinstance(valid_every, bool) or not isinstance(valid_every, int) or valid_every < 0 or valid_every == 1:
        raise genkit.UsageError(
            f"cub option valid_every={valid_every!r} is not valid; use 0 (no valid split) or K >= 2 "
            "(every K-th training image is held out)")
    return CubSource(min_certainty=int(min_certainty), crop_bbox=bool(crop_bbox), valid_every=valid_every)


@genkit.hookimpl
def register_datasets(register):
    register("cub", build)
