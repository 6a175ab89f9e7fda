"""Dataset ``shapes``: coloured shapes with 12 named attributes, generated on the spot."""

from __future__ import annotations

from pathlib import Path

import genkit
from genkit.plugin_api import SHAPES_ATTRIBUTE_NAMES, shapes_index


class ShapesSource:
    name = "shapes"
    description = "Procedural coloured shapes, 12 attributes; built in, no download"
    default_image_size = (64, 64)
    needs_root = False
    obtain_hint = ""

    def __init__(self, count: int = 12000, seed: int = 0):
        if count < 10:
            raise genkit.UsageError(f"shapes count {count} is too small; use at least 10")
        self.count = count
        self.seed = seed
        self.attribute_names = list(SHAPES_ATTRIBUTE_NAMES)

    def scan(self, root: Path | None = None) -> genkit.SourceIndex:
        return shapes_index(self.count, self.seed)


def build(count: int = 12000, seed: int = 0) -> ShapesSource:
    """Procedural coloured shapes with 12 attributes, generated on first use; no download."""
    return ShapesSource(count=count, seed=seed)


@genkit.hookimpl
def register_datasets(register):
    register("shapes", build)
