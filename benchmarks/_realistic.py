"""Shared by the data-pipeline benchmarks: real-format folders with photo-like JPEGs, the machine.

The folders come from the test fixtures (exact CelebA / CUB annotation formats); their images
are then replaced by photo-like JPEGs of the real sizes and file sizes (CelebA 178x218, about
11 KB; CUB 500x375, about 35 KB), so decoding costs what it costs on the real data.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _machine import machine as base_machine, table  # noqa: E402,F401  (table: re-exported)
from fixtures_real_formats import write_celeba, write_cub  # noqa: E402


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
    fixture = write_celeba(root, counts=(count - n_valid - n_test, n_valid, n_test), size=(8, 8), seed=seed)
    rng = np.random.default_rng(seed)
    for name in fixture.files:
        photo(178, 218, rng).save(fixture.image_dir / name, quality=90)
    return fixture.root


def cub_like(root: Path, count: int, seed: int = 0) -> Path:
    """A CUB-200-2011 folder with ``count`` photo-like JPEGs of about 500x375 (some grayscale)."""
    per_class = 20
    fixture = write_cub(root, n_classes=max(1, count // per_class), per_class=per_class, seed=seed)
    rng = np.random.default_rng(seed)
    for k, rel in enumerate(fixture.paths):
        width, height = int(rng.integers(440, 501)), int(rng.integers(330, 376))
        photo(width, height, rng, gray=(k + 1) in fixture.gray).save(fixture.base / "images" / rel, quality=85)
    return fixture.root


def machine() -> str:
    """The shared machine line, plus what decoding and HDF5 speed depend on and the load."""
    import h5py
    import PIL

    return (f"{base_machine()}; h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}), Pillow {PIL.__version__}; "
            f"load average {os.getloadavg()[0]:.1f} at start")
