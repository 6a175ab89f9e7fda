"""Dataset ``celeba``: CelebA's aligned faces with their 40 binary attributes (files you download)."""

from __future__ import annotations

from pathlib import Path

import genkit
from genkit.plugin_api import CELEBA_ATTRIBUTE_NAMES, CELEBA_HINT, celeba_index


class CelebASource:
    name = "celeba"
    description = "CelebA aligned faces, 40 attributes, splits train/valid/test; download it yourself"
    default_image_size = (64, 64)
    needs_root = True
    obtain_hint = CELEBA_HINT

    def __init__(self) -> None:
        self.attribute_names = list(CELEBA_ATTRIBUTE_NAMES)

    def scan(self, root: Path | None = None) -> genkit.SourceIndex:
        if root is None:
            raise genkit.UsageError(f"dataset 'celeba' needs its files: pass --root PATH. {CELEBA_HINT}")
        return celeba_index(root)


def build() -> CelebASource:
    """CelebA faces with 40 attributes (official or torchvision layout); download it yourself."""
    return CelebASource()


@genkit.hookimpl
def register_datasets(register):
    register("celeba", build)
