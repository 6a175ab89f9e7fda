"""Dataset ``folder``: your own images in a folder, labelled by ``attributes.csv``."""

from __future__ import annotations

from pathlib import Path

import genkit
from genkit.plugin_api import FOLDER_CSV_NAME, folder_index


class FolderSource:
    name = "folder"
    description = "Your own images: --root DIR holding attributes.csv (filename,<attr1>,...) and the images"
    default_image_size = (64, 64)
    needs_root = True
    obtain_hint = (f"Put your images in a folder with an {FOLDER_CSV_NAME} whose header is "
                   "filename,<attr1>,<attr2>,... and one row of 0/1 (or -1/+1) values per image; see docs/datasets.md.")

    def __init__(self, csv: str = FOLDER_CSV_NAME, valid_fraction: float = 0.1, test_fraction: float = 0.1):
        for label, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= value < 1.0:
                raise genkit.UsageError(f"folder {label} {value} is outside [0, 1); for example {label}=0.1")
        if valid_fraction + test_fraction >= 1.0:
            raise genkit.UsageError(
                f"folder valid_fraction + test_fraction = {valid_fraction + test_fraction:g} leaves no training "
                "images; keep their sum below 1")
        self.csv = csv
        self.valid_fraction = valid_fraction
        self.test_fraction = test_fraction

    def scan(self, root: Path | None) -> genkit.SourceIndex:
        if root is None:
            raise genkit.UsageError(f"dataset 'folder' needs --root DIR. {self.obtain_hint}")
        return folder_index(root, self.csv, self.valid_fraction, self.test_fraction)


def build(csv: str = FOLDER_CSV_NAME, valid_fraction: float = 0.1, test_fraction: float = 0.1) -> FolderSource:
    """Your own images: --root DIR holding attributes.csv (filename,<attr1>,...) and the images."""
    return FolderSource(csv=csv, valid_fraction=valid_fraction, test_fraction=test_fraction)


@genkit.hookimpl
def register_datasets(register):
    register("folder", build)
