"""Model ``cvae``: the shallow CNN-CVAE of the paper (§4.1).

Encoder: the conditioner's first layer on (image, condition) → ReLU → max-pool → conv → ReLU →
max-pool → flatten → two linear heads, μ and log σ². Reparameterisation z = μ + σ⊙ε. Decoder: a
linear layer on the conditioner's join of z and the condition → reshape to (C₂, H/4, W/4) →
transposed conv (stride 2) → ReLU → transposed conv (stride 2) → sigmoid. Kaiming-normal
weights, zero biases. Any H and W divisible by 4.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

import genkit
from genkit.errors import UsageError


class CVAE(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], conditioner, latent_dim: int = 32,
                 channels: tuple[int, int] = (32, 64), kernel_size: int = 3):
        super().__init__()
        image_channels, height, width = image_shape
        if height % 4 or width % 4:
            raise UsageError(
                f"image size {height}x{width} is not divisible by 4, which the cvae's two 2x poolings need; "
                "choose for example 64, 128x96 or 216x176"
            )
        if latent_dim < 1:
            raise UsageError(f"latent size {latent_dim} must be at least 1")
        if kernel_size % 2 == 0:
            raise UsageError(f"kernel size {kernel_size} must be odd so convolutions keep the image size")
        c1, c2 = (int(c) for c in channels)
        self.image_shape = (image_channels, height, width)
        self.latent_dim = latent_dim
        self.conditioner = conditioner
        self.feature_shape = (c2, height // 4, width // 4)
        features = c2 * (height // 4) * (width // 4)
        pad = kernel_size // 2

        self.enc_conv1 = conditioner.input_layer(image_channels, c1, kernel_size, padding=pad)
        self.enc_conv2 = nn.Conv2d(c1, c2, kernel_size, padding=pad)
        self.fc_mu = nn.Linear(features, latent_dim)
        self.fc_logvar = nn.Linear(features, latent_dim)
        self.dec_fc = nn.Linear(latent_dim + conditioner.latent_extra_dim, features)
        self.dec_deconv1 = nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1)
        self.dec_deconv2 = nn.ConvTranspose2d(c1, image_channels, 4, stride=2, padding=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal weights and zero biases, as in the paper.

        The gain is ReLU's for layers a ReLU follows and 1 for the others (the μ and log σ²
        heads, the decoder's linear layer, the last layer before the sigmoid). The fan-in of a
        transposed convolution is ``in_channels · k² / stride²`` (the weights one output pixel
        sees), not what ``nn.init`` derives from its weight shape; with that, the initial
        output sits near 0.5 instead of saturating the sigmoid.
        """
        followed_by_relu = {self.enc_conv2, self.dec_deconv1, _first_conv(self.enc_conv1)}
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                gain = 2.0 ** 0.5 if module in followed_by_relu else 1.0
                _kaiming_normal(module, gain)
                nn.init.zeros_(module.bias)

    def encode(self, images: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The parameters of q(z | x, y): μ and log σ²."""
        h = F.max_pool2d(F.relu(self.enc_conv1(images, condition)), 2)
        h = F.max_pool2d(F.relu(self.enc_conv2(h)), 2)
        h = h.flatten(1)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        h = self.dec_fc(self.conditioner.join_latent(z, condition))
        h = h.view(-1, *self.feature_shape)
        h = F.relu(self.dec_deconv1(h))
        return torch.sigmoid(self.dec_deconv2(h))

    def forward(self, images: torch.Tensor, condition: torch.Tensor) -> genkit.ModelOutput:
        mu, logvar = self.encode(images, condition)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return genkit.ModelOutput(reconstruction=self.decode(z, condition), mu=mu, logvar=logvar, z=z)

    @torch.no_grad()
    def sample(self, condition: torch.Tensor, z: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Images for each condition row, with z from N(0, I) unless given."""
        if z is None:
            z = torch.randn(condition.shape[0], self.latent_dim, generator=generator,
                            device=condition.device if generator is None else generator.device)
        return self.decode(z.to(condition.device), condition)


def _first_conv(layer: nn.Module) -> nn.Module:
    """The convolution inside the conditioner's input layer (or the layer itself)."""
    return next((m for m in layer.modules() if isinstance(m, nn.Conv2d)), layer)


def _kaiming_normal(module: nn.Module, gain: float) -> None:
    weight = module.weight
    if isinstance(module, nn.ConvTranspose2d):
        taps = weight[0, 0].numel() / (module.stride[0] * module.stride[1])
        fan_in = weight.shape[0] * taps
    else:
        fan_in = weight[0].numel()
    with torch.no_grad():
        weight.normal_(0.0, gain / fan_in ** 0.5)


def build(image_shape: tuple[int, int, int], conditioner, latent_dim: int = 32,
          channels: list[int] = (32, 64), kernel_size: int = 3) -> CVAE:
    """The paper's shallow CNN-CVAE: two conv blocks, linear heads, two transposed convs."""
    return CVAE(tuple(image_shape), conditioner, latent_dim=latent_dim, channels=tuple(channels),
                kernel_size=kernel_size)


@genkit.hookimpl
def register_models(register):
    register("cvae", build)
