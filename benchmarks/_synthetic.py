"""Shared by the benchmarks: a synthetic dataset plugin that is fast to generate, and model building.

``bench-synthetic`` is registered at run time with :func:`genkit.register_plugin`, exactly as a
third-party dataset would be, so its images go through genkit's real HDF5 cache path (cache
build, manifest, reading back, placement on the GPU, RAM or disk). Generating an image costs a
copy and a roll of one of a few dozen precomputed textures (microseconds), so a CelebA-sized set
of 202,599 images is cached in seconds rather than minutes; the pixels do not change what a
training step costs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import genkit

NAME = "bench-synthetic"
BANK = 61  # textures per image size; image i is texture i % BANK, shifted by i // BANK
CELEBA_SPLITS = (162_770, 19_867, 19_962)  # CelebA's train / valid / test sizes: 202,599 images


class SyntheticReader:
    """Image ``i`` at any size; picklable, and builds its textures once per process and size."""

    def __init__(self, seed: int):
        self.seed = seed
        self._banks: dict[tuple[int, int], np.ndarray] = {}

    def __getstate__(self):
        return {"seed": self.seed, "_banks": {}}

    def _bank(self, size: tuple[int, int]) -> np.ndarray:
        bank = self._banks.get(size)
        if bank is None:
            height, width = size
            rng = np.random.default_rng([self.seed, height, width])
            ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
            bank = np.empty((BANK, height, width, 3), dtype=np.uint8)
            for k in range(BANK):
                fx, fy, phase = rng.uniform(0.5, 4, 3)
                base = rng.uniform(40, 215, 3)
                wave = 35 * np.sin(2 * np.pi * (fx * xs / width + fy * ys / height) + phase)
                noise = rng.normal(0, 8, (height, width, 3))
                bank[k] = np.clip(base + wave[..., None] + noise, 0, 255).astype(np.uint8)
            self._banks[size] = bank
        return bank

    def __call__(self, i: int, size: tuple[int, int]) -> np.ndarray:
        bank = self._bank(tuple(size))
        return np.roll(bank[i % BANK], (i // BANK) % size[1], axis=1)


class SyntheticSource:
    name = NAME
    description = "Synthetic textures with random attributes, for benchmarks"
    default_image_size = (64, 64)
    needs_root = False
    obtain_hint = ""

    def __init__(self, train: int, valid: int, test: int, attributes: int, seed: int):
        self.counts = (int(train), int(valid), int(test))
        self.attribute_names = [f"a{k}" for k in range(int(attributes))]
        self.seed = int(seed)

    def scan(self, root: Path | None = None) -> genkit.SourceIndex:
        total = sum(self.counts)
        rng = np.random.default_rng([self.seed, 7])
        attributes = (rng.random((total, len(self.attribute_names))) < 0.25).astype(np.uint8)
        bounds = np.cumsum((0, *self.counts))
        splits = {name: np.arange(bounds[k], bounds[k + 1]) for k, name in enumerate(("train", "valid", "test"))}
        fingerprint = f"{NAME}-v1-{self.counts}-{len(self.attribute_names)}-{self.seed}"
        return genkit.SourceIndex(attribute_names=list(self.attribute_names), attributes=attributes, splits=splits,
                                  reader=SyntheticReader(self.seed), fingerprint=fingerprint)


def build(train: int = 1024, valid: int = 128, test: int = 128, attributes: int = 40, seed: int = 0) -> SyntheticSource:
    """Synthetic textures with random attributes (benchmarks only)."""
    return SyntheticSource(train, valid, test, attributes, seed)


@genkit.hookimpl
def register_datasets(register):
    register(NAME, build)


_registered = False


def register() -> str:
    """Register the ``bench-synthetic`` dataset once in this process; returns its name."""
    global _registered
    if not _registered:
        import sys

        if genkit.register_plugin(sys.modules[__name__], name="genkit-benchmarks-synthetic") is None:
            raise RuntimeError(f"could not register the {NAME} plugin: {genkit.plugin_errors()[-1]}")
        _registered = True
    return NAME


def build_components(config: genkit.RunConfig):
    """``(conditioner, model, loss)`` of ``config``, freshly initialised, through the public registries."""
    conditioner = genkit.registry("conditioners").get(config.conditioner.name).create(
        list(config.data.attribute_names), **config.conditioner.options)
    model = genkit.registry("models").get(config.model.name).create(
        (3, *config.data.image_size), conditioner, **config.model.options)
    loss = genkit.registry("losses").get(config.loss.name).create(**config.loss.options)
    return conditioner, model, loss
