"""Shared by the data-pipeline benchmarks: real-format folders with photo-like JPEGs, the machine.

The folders are written in the exact CelebA / CUB annotation formats (benchmarks/_real_formats.py)
with photo-like JPEGs of the real sizes and file sizes (CelebA 178x218, about 11 KB; CUB about
500x375, about 35 KB, some grayscale), so decoding costs what it costs on the real data.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine as base_machine, table  # noqa: E402,F401  (table: re-exported)
from _real_formats import write_celeba, write_cub  # noqa: E402


def photo(width: int, height: int, rng: np.random.Generator, gray: bool = False) -> Image.Image:
    """Smooth colour regions, mid-frequency texture and sensor-like noise."""
    coarse = Image.fromarray(rng.uniform(30, 225, (6, 5, 3)).astype(np.uint8)).resize((width, height),
                                                                                     Image.Resampling.BICUBIC)
    texture = Image.fromarray((rng.uniform(-40, 40, (max(1, height // 8), max(1, width // 8), 3)) + 128)
                              .astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR)
    pixels = (np.asarray(coarse, np.float32) + np.asarray(texture, np.float32) - 128
              + rng.normal(0, 5, (height, width, 3)))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image.convert("L") if gray else image


def celeba_like(root: Path, count: int, seed: int = 0) -> Path:
    """A CelebA folder (official layout) with ``count`` 178x218 photo-like JPEGs; returns --root."""
    n_valid = n_test = max(1, count // 10)
    folder = write_celeba(root, (count - n_valid - n_test, n_valid, n_test), lambda k, rng: photo(178, 218, rng),
                          seed=seed)
    return folder.root


def cub_like(root: Path, count: int, seed: int = 0) -> Path:
    """A CUB-200-2011 folder with ``count`` photo-like JPEGs of about 500x375 (every fifth grayscale)."""
    per_class = 20

    def image(k: int, rng: np.random.Generator) -> Image.Image:
        width, height = int(rng.integers(440, 501)), int(rng.integers(330, 376))
        return photo(width, height, rng, gray=(k + 1) % 5 == 2)

    return write_cub(root, max(1, count // per_class), per_class, image, seed=seed).root


def machine() -> str:
    """The shared machine line, plus what decoding and HDF5 speed depend on and the load."""
    import h5py
    import PIL

    return (f"{base_machine()}; h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}), Pillow {PIL.__version__}; "
            f"load average {os.getloadavg()[0]:.1f} at start")
