"""Model ``deep-cvae``: a deeper CNN-CVAE with batch norm.

Encoder: the conditioner's first layer on (image, condition), 3x3, full resolution → BN → ReLU,
then one 4x4 stride-2 convolution → BN → ReLU per entry of ``channels``, halving the size each
time → flatten → linear heads μ and log σ². Decoder: a linear layer on the conditioner's join of
z and the condition → reshape → BN → ReLU, then one 4x4 stride-2 transposed convolution → BN →
ReLU per level, and a 3x3 convolution to image logits. ``reconstruction`` is their sigmoid; the
logits go out in ``extras["logits"]`` for losses that want them. H and W must be divisible by
2 ** len(channels).
"""

from __future__ import annotations

import torch
from torch import nn

import genkit


def _block(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class DeepCVAE(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], conditioner, latent_dim: int = 64,
                 channels: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        image_channels, height, width = image_shape
        channels = tuple(int(c) for c in channels)
        factor = 2 ** len(channels)
        if not channels or min(channels) < 1:
            raise genkit.UsageError(f"deep-cvae channels {list(channels)} must be one or more positive widths")
        if height % factor or width % factor:
            raise genkit.UsageError(
                f"image size {height}x{width} is not divisible by {factor}, which deep-cvae's {len(channels)} "
                f"downsamplings need; choose a size divisible by {factor} or fewer channels (--model-opt)")
        if latent_dim < 1:
            raise genkit.UsageError(f"latent size {latent_dim} must be at least 1")
        self.latent_dim = latent_dim
        self.conditioner = conditioner
        self.feature_shape = (channels[-1], height // factor, width // factor)
        features = channels[-1] * (height // factor) * (width // factor)

        # The conditioner decides how the condition enters; its layer takes (images, condition).
        self.stem = conditioner.input_layer(image_channels, channels[0], 3, padding=1)
        self.stem_norm = nn.Sequential(nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True))
        widths_in = (channels[0], *channels[:-1])
        self.down = nn.Sequential(*[_block(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=False), c_out)
                                    for c_in, c_out in zip(widths_in, channels)])
        self.fc_mu = nn.Linear(features, latent_dim)
        self.fc_logvar = nn.Linear(features, latent_dim)

        self.dec_fc = nn.Linear(latent_dim + conditioner.latent_extra_dim, features)
        self.dec_norm = nn.Sequential(nn.BatchNorm2d(channels[-1]), nn.ReLU(inplace=True))
        self.up = nn.Sequential(*[_block(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False), c_out)
                                  for c_in, c_out in zip(reversed(channels), reversed(widths_in))])
        self.head = nn.Conv2d(channels[0], image_channels, 3, padding=1)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def encode(self, images: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The parameters of q(z | x, y): μ and log σ²."""
        h = self.down(self.stem_norm(self.stem(images, condition))).flatten(1)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode_logits(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        h = self.dec_fc(self.conditioner.join_latent(z, condition)).view(-1, *self.feature_shape)
        return self.head(self.up(self.dec_norm(h)))

    def decode(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """The decoder's mean image in [0, 1] for a code z (with encode: genkit's posterior capability)."""
        return torch.sigmoid(self.decode_logits(z, condition))

    def forward(self, images: torch.Tensor, condition: torch.Tensor) -> genkit.ModelOutput:
        mu, logvar = self.encode(images, condition)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        logits = self.decode_logits(z, condition)
        return genkit.ModelOutput(reconstruction=torch.sigmoid(logits), mu=mu, logvar=logvar, z=z,
                                  extras={"logits": logits})

    @property
    def noise_shape(self) -> tuple[int]:
        return (self.latent_dim,)

    @torch.no_grad()
    def sample(self, condition: torch.Tensor, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None, *, temperature: float = 1.0) -> torch.Tensor:
        """Images in [0, 1] for each condition row, with z = temperature · noise, noise from N(0, I).

        :param temperature: scale of the prior noise, above 0 (below 1 nearer the mode).
        """
        if noise is None:
            noise = torch.randn(condition.shape[0], self.latent_dim, generator=generator,
                                device=condition.device if generator is None else generator.device)
        return self.decode(noise.to(condition.device) * temperature, condition)

    @staticmethod
    def check_sampling_options(temperature: float) -> None:
        if not 0 < temperature <= 100:
            raise genkit.UsageError(f"--temperature {temperature:g} is outside (0, 100]; try 1.0")


def build_model(image_shape: tuple[int, int, int], conditioner, latent_dim: int = 64,
                channels: list[int] = (32, 64, 128)) -> DeepCVAE:
    """A deeper CNN-CVAE: batch-normed stride-2 convolutions, one per entry of channels."""
    return DeepCVAE(tuple(image_shape), conditioner, latent_dim=latent_dim, channels=tuple(channels))
