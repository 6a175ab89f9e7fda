"""A torch Dataset over one split of an HDF5 cache."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import h5py
import numpy as np
import torch

from genkit_datasets.cache import CacheInfo, read_cache_info
from genkit_datasets.errors import UsageError


class CachedImageDataset(torch.utils.data.Dataset):
    """Items are ``(image, attributes)``: float32 ``(3, H, W)`` in [0, 1] and float32 0/1.

    Safe with DataLoader workers: the HDF5 file is opened lazily by whichever process reads
    first, never shared across a fork. ``in_memory=True`` reads the split into RAM once (uint8);
    :meth:`images_uint8` hands that tensor to a trainer that keeps the data on the GPU.
    ``__getitems__`` reads a whole batch in one HDF5 call when a DataLoader asks for one.
    """

    def __init__(self, path: str | Path, split: str = "train", limit: int | None = None,
                 in_memory: bool = False):
        self.path = Path(path)
        info = read_cache_info(self.path)
        if info is None:
            raise UsageError(f"{self.path} is not a genkit cache; build it with `genkit data prepare`")
        if split not in info.split_sizes:
            raise UsageError(
                f"split {split!r} does not exist in {info.dataset}; choose one of {', '.join(sorted(info.split_sizes))}"
            )
        self.info: CacheInfo = info
        self.split = split
        self.attribute_names: list[str] = list(info.attribute_names)
        self.image_shape = (3, *info.image_size)
        with h5py.File(self.path, "r") as f:
            indices = f["splits"][split][()]
            if limit is not None:
                indices = indices[:limit]
            self.indices = np.asarray(indices, dtype=np.int64)
            self.attributes = torch.from_numpy(f["attributes"][()][self.indices].astype(np.float32))
        if len(self.indices) == 0:
            raise UsageError(f"split {split!r} of {info.dataset} is empty ({self.path})")
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._images: torch.Tensor | None = self._read_all() if in_memory else None

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, keep) -> "CachedImageDataset":
        """The same split with only the positions where ``keep`` (a boolean mask, one per item) is true.

        A view over the same cache file: nothing is read; images already in memory are filtered.
        """
        mask = np.asarray(keep, dtype=bool).reshape(-1)
        if len(mask) != len(self.indices):
            raise ValueError(f"subset mask has {len(mask)} entries for a split of {len(self.indices)} images")
        chosen = copy.copy(self)
        chosen._file, chosen._pid = None, None
        chosen.indices = self.indices[mask]
        rows = torch.from_numpy(mask)
        chosen.attributes = self.attributes[rows]
        chosen._images = None if self._images is None else self._images[rows]
        return chosen

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        """uint8 images for positions ``rows`` of this split, in the order asked.

        Each run of consecutive indices is read as one slice: h5py's fancy indexing costs about a
        millisecond per image (HDF5 2.0), a slice tens of microseconds.
        """
        wanted = self.indices[rows]
        unique, inverse = np.unique(wanted, return_inverse=True)
        images = self._h5()["images"]
        block = np.empty((len(unique), *images.shape[1:]), dtype=np.uint8)
        starts = np.flatnonzero(np.diff(unique, prepend=-2) != 1).tolist()
        for a, b in zip(starts, starts[1:] + [len(unique)]):
            source = np.s_[unique[a]:unique[b - 1] + 1]
            if b - a > 256:  # a long run (a whole split): read in place, not via a temporary copy
                images.read_direct(block, source, np.s_[a:b])
            else:
                block[a:b] = images[source]
        if len(unique) == len(wanted) and np.array_equal(unique, wanted):
            return block
        return block[inverse.reshape(-1)]

    def read_uint8(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch as stored: uint8 images (B, 3, H, W) and float attributes, for positions ``rows``."""
        rows_arr = np.asarray(rows, dtype=np.int64)
        if self._images is not None:
            pixels = self._images[torch.from_numpy(rows_arr)]
        else:
            pixels = torch.from_numpy(self._read_rows(rows_arr))
        return pixels, self.attributes[torch.from_numpy(rows_arr)]

    def _read_all(self) -> torch.Tensor:
        return torch.from_numpy(self._read_rows(np.arange(len(self.indices))))

    def images_uint8(self) -> torch.Tensor:
        """All images of the split as one uint8 tensor (N, 3, H, W), read once and kept."""
        if self._images is None:
            self._images = self._read_all()
        return self._images

    def __getitem__(self, i: int):
        if self._images is not None:
            pixels = self._images[i]
        else:
            pixels = torch.from_numpy(self._read_rows(np.array([i]))[0])
        return pixels.float().div_(255.0), self.attributes[i]

    def __getitems__(self, rows: list[int]):
        rows_arr = np.asarray(rows, dtype=np.int64)
        if self._images is not None:
            pixels = self._images[torch.from_numpy(rows_arr)].numpy()
        else:
            pixels = self._read_rows(rows_arr)
        # numpy divides on one thread (same bits as torch's x / 255): torch's parallel kernel stalls
        # for milliseconds per batch when other processes hold the cores.
        images = torch.from_numpy(np.divide(pixels, np.float32(255), dtype=np.float32))
        attributes = self.attributes[torch.from_numpy(rows_arr)]
        return [(images[j], attributes[j]) for j in range(len(rows))]
