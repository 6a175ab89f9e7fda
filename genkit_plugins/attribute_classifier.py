"""Classifier ``small-cnn``: the attribute judge behind ``genkit evaluate``.

Four 3×3 stride-2 conv → batch norm → ReLU blocks (each halves the size), an adaptive average
pool to a 4×4 map (kept, not pooled away, so positional attributes such as ``left`` or ``top``
stay visible), a hidden linear layer and one logit per attribute. Small enough to train on a
CPU in a few minutes on ``shapes``; genkit trains it with a binary cross-entropy per attribute.
``features(images)`` returns the hidden layer after its ReLU, which ``genkit evaluate``'s
Fréchet distance ``fd`` compares.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

import genkit


class SmallCNN(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], attribute_names: list[str],
                 channels: tuple[int, ...] = (16, 32, 64, 64), hidden: int = 128):
        super().__init__()
        image_channels = image_shape[0]
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) < 1:
            raise genkit.UsageError(f"small-cnn channels {list(channels)} must be one or more positive widths")
        self.attribute_names = list(attribute_names)
        widths_in = (image_channels, *channels[:-1])
        self.blocks = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())
            for c_in, c_out in zip(widths_in, channels)])
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.hidden = nn.Linear(channels[-1] * 16, hidden)
        self.head = nn.Linear(hidden, len(self.attribute_names))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate layer (the hidden layer after its ReLU), ``(B, hidden)``: what fd compares."""
        return F.relu(self.hidden(self.pool(self.blocks(images)).flatten(1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def build(image_shape: tuple[int, int, int], attribute_names: list[str], channels: list[int] = (16, 32, 64, 64),
          hidden: int = 128) -> SmallCNN:
    """A small CNN with one logit per attribute; judges generated images in `genkit evaluate`."""
    return SmallCNN(tuple(image_shape), attribute_names, channels=tuple(channels), hidden=hidden)


@genkit.hookimpl
def register_classifiers(register):
    register("small-cnn", build)
