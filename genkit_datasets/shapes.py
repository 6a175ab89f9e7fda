"""``shapes``: a procedurally generated image set with named binary attributes.

Each image shows one coloured shape on a textured background. Attributes come in two mutually
exclusive groups, like CUB's attribute groups and species, and four independent flags, like
CelebA's:

* ``shape::circle|square|triangle|cross`` (exactly one)
* ``color::red|green|blue|yellow`` (exactly one)
* ``large`` (else small), ``left`` (else right half), ``top`` (else bottom half), ``outline``
  (a dark border)

No attribute names the jitter of position, size and hue, the rotation, or the background
texture, so one attribute vector maps to many images. Everything is a function of ``(seed, i)``:
the same seed gives the same images on every machine.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from PIL import Image, ImageDraw

from genkit_datasets.source import SourceIndex

SHAPES = ("circle", "square", "triangle", "cross")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 210, 30),
}
FLAGS = ("large", "left", "top", "outline")
ATTRIBUTE_NAMES = [f"shape::{s}" for s in SHAPES] + [f"color::{c}" for c in COLORS] + list(FLAGS)
GENERATOR_VERSION = 1
SUPERSAMPLE = 4


def sample_attributes(count: int, seed: int) -> np.ndarray:
    """The attribute table: one shape, one colour, and four fair coin flips per image."""
    rng = np.random.default_rng([seed, 0x5A9E])
    table = np.zeros((count, len(ATTRIBUTE_NAMES)), dtype=np.uint8)
    rows = np.arange(count)
    table[rows, rng.integers(0, len(SHAPES), count)] = 1
    table[rows, len(SHAPES) + rng.integers(0, len(COLORS), count)] = 1
    table[:, len(SHAPES) + len(COLORS):] = rng.integers(0, 2, (count, len(FLAGS)))
    return table


class ShapesReader:
    """Renders image ``i`` at any (H, W); picklable, so cache workers can render in parallel."""

    def __init__(self, attributes: np.ndarray, seed: int):
        self.attributes = attributes
        self.seed = seed

    def __call__(self, i: int, size: tuple[int, int]) -> np.ndarray:
        return render(self.attributes[i], size, np.random.default_rng([self.seed, 1, i]))


def render(attributes: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Draw one image with the given attribute vector; ``rng`` supplies everything unnamed."""
    height, width = size
    on = {name for name, v in zip(ATTRIBUTE_NAMES, attributes) if v}
    shape = next(s for s in SHAPES if f"shape::{s}" in on)
    color = next(c for c in COLORS if f"color::{c}" in on)

    H, W = height * SUPERSAMPLE, width * SUPERSAMPLE
    background = _background(H, W, rng)
    canvas = Image.fromarray(background)
    draw = ImageDraw.Draw(canvas)

    unit = min(H, W)
    radius = unit * ((0.27 if "large" in on else 0.15) + rng.uniform(-0.02, 0.02))
    cx = W * ((0.3 if "left" in on else 0.7) + rng.uniform(-0.05, 0.05))
    cy = H * ((0.3 if "top" in on else 0.7) + rng.uniform(-0.05, 0.05))
    angle = rng.uniform(-0.35, 0.35)
    shade = rng.uniform(0.85, 1.1)
    fill = tuple(int(np.clip(c * shade, 0, 255)) for c in COLORS[color])
    outline = (15, 15, 15) if "outline" in on else None
    border = max(1, round(unit * 0.045)) if outline else 0

    if shape == "circle":
        box = [cx - radius, cy - radius, cx + radius, cy + radius]
        draw.ellipse(box, fill=fill, outline=outline, width=border)
    else:
        points = _polygon(shape, cx, cy, radius, angle)
        draw.polygon(points, fill=fill, outline=outline, width=border)
    small = canvas.resize((width, height), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8)


def _background(H: int, W: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random grey field with fine noise: texture that no attribute describes."""
    coarse = rng.uniform(95, 165, size=(4, 4, 1)) + rng.uniform(-12, 12, size=(4, 4, 3))
    field = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8)).resize((W, H), Image.Resampling.BILINEAR)
    noise = rng.normal(0, 6, size=(H // SUPERSAMPLE, W // SUPERSAMPLE, 1))
    noise = np.repeat(np.repeat(noise, SUPERSAMPLE, axis=0), SUPERSAMPLE, axis=1)
    return np.clip(np.asarray(field, dtype=np.float32) + noise, 0, 255).astype(np.uint8)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        base = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        scale = r / math.sqrt(2) * 1.15
    elif shape == "triangle":
        base = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        scale = r * 1.15
    else:  # cross: a plus sign with arms a third of its width
        t = 1 / 3
        base = [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1), (-t, t),
                (-1, t), (-1, -t), (-t, -t)]
        scale = r
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + scale * (x * c - y * s), cy + scale * (x * s + y * c)) for x, y in base]


def shapes_index(count: int = 12000, seed: int = 0) -> SourceIndex:
    """The ``shapes`` source: ``count`` images, split 80/10/10 into train/valid/test by id."""
    attributes = sample_attributes(count, seed)
    n_train, n_valid = int(count * 0.8), int(count * 0.1)
    ids = np.arange(count)
    splits = {"train": ids[:n_train], "valid": ids[n_train:n_train + n_valid], "test": ids[n_train + n_valid:]}
    fingerprint = hashlib.sha256(
        f"shapes:v{GENERATOR_VERSION}:count={count}:seed={seed}".encode()
    ).hexdigest()
    return SourceIndex(
        attribute_names=list(ATTRIBUTE_NAMES),
        attributes=attributes,
        splits=splits,
        reader=ShapesReader(attributes, seed),
        fingerprint=fingerprint,
        crop="none: rendered directly at the requested size",
        exclusive_groups=["shape", "color"],
    )
