"""What a dataset reader hands to the cache builder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

#: ``reader(i, (height, width)) -> uint8 array (height, width, 3)``: decode item ``i`` and bring
#: it to the requested size. It runs in worker processes, so it must be picklable (a module-level
#: function or a small object, not a lambda).
ImageReader = Callable[[int, tuple[int, int]], np.ndarray]


@dataclass
class SourceIndex:
    """Everything about a dataset except the pixels.

    ``attributes[i]`` belongs to the image that ``reader(i, size)`` returns; ``splits`` map a
    split name to indices into the items, in the dataset's own id order. ``fingerprint`` changes
    whenever the annotation files, the image list or the reader's options change, so a cache built
    from another version of the source is rebuilt rather than reused.
    """

    attribute_names: list[str]
    attributes: np.ndarray
    splits: dict[str, np.ndarray]
    reader: ImageReader
    fingerprint: str
    keys: list[str] = field(default_factory=list)
    crop: str = "centre crop to the target aspect ratio, then resize"
    exclusive_groups: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.attributes = np.ascontiguousarray(self.attributes, dtype=np.uint8)
        if self.attributes.ndim != 2 or self.attributes.shape[1] != len(self.attribute_names):
            raise ValueError(
                f"attributes have shape {self.attributes.shape}, expected (N, {len(self.attribute_names)})"
            )
        count = len(self)
        for name, idx in self.splits.items():
            idx = np.asarray(idx, dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= count):
                raise ValueError(f"split {name!r} indexes outside 0..{count - 1}")
            self.splits[name] = idx
        if "valid" in self.splits and not self.splits["valid"].size:
            del self.splits["valid"]  # optional; an empty one is none, so training validates on test
        if self.keys and len(self.keys) != count:
            raise ValueError(f"{len(self.keys)} keys for {count} items")
        self.exclusive_groups = list(self.exclusive_groups)
        for group in self.exclusive_groups:
            if not any(name.startswith(f"{group}::") for name in self.attribute_names):
                raise ValueError(f"exclusive group {group!r} has no attribute named '{group}::<value>'")

    def __len__(self) -> int:
        return int(self.attributes.shape[0])

    def key(self, i: int) -> str:
        """A human-readable name of item ``i`` (a file path or an id) for error messages."""
        return self.keys[i] if self.keys else str(i)
