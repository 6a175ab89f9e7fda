"""Model ``cvae``: the shallow CNN-CVAE of the paper (§4.1).

Encoder: the conditioner's first layer on (image, condition) → ReLU → max-pool → conv → ReLU →
max-pool → flatten → two linear heads, μ and log σ². Reparameterisation z = μ + σ⊙ε. Decoder: a
linear layer on the conditioner's join of z and the condition → reshape to (C₂, H/4, W/4) →
transposed conv (stride 2) → ReLU → transposed conv (stride 2) → sigmoid. Kaiming-normal
weights, zero biases. Any H and W divisible by 4.

Prior (``prior`` option): ``standard`` is the paper's N(0, I). ``learned`` (the default recipe's
choice: with a calibrated decoder likelihood, samples from N(0, I) fall into the posterior's holes) is Sohn et al.'s
conditional prior p(z|x) = N(μ_p(x), σ_p(x)²), a small MLP on the condition x (linear → ReLU →
linear to μ_p and log σ_p²); its parameters go out in ``ModelOutput.extras["prior_mu"]`` and
``["prior_logvar"]``, so ``beta-elbo`` uses KL(q(z|x,y) ‖ p(z|x)) in closed form. The MLP's
last layer starts at zero, so training starts from N(0, I).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

import genkit

PRIORS = ("standard", "learned")
PRIOR_HIDDEN = 128
#: beyond this the decoder sees codes hundreds of prior widths out: saturated images, then NaN
MAX_TEMPERATURE = 100.0


class CVAE(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], conditioner, latent_dim: int = 32,
                 channels: tuple[int, int] = (32, 64), kernel_size: int = 3, prior: str = "standard"):
        super().__init__()
        if prior not in PRIORS:
            raise genkit.UsageError(f"prior {prior!r} is not known; choose one of: {', '.join(PRIORS)}")
        image_channels, height, width = image_shape
        if height % 4 or width % 4:
            raise genkit.UsageError(
                f"image size {height}x{width} is not divisible by 4, which the cvae's two 2x poolings need; "
                f"choose {nearest_sizes(height, width, 4)}"
            )
        if latent_dim < 1:
            raise genkit.UsageError(f"latent size {latent_dim} must be at least 1")
        if kernel_size % 2 == 0:
            raise genkit.UsageError(f"kernel size {kernel_size} must be odd so convolutions keep the image size")
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
        self.prior = prior
        self.prior_net = (nn.Sequential(nn.Linear(conditioner.dim, PRIOR_HIDDEN), nn.ReLU(),
                                        nn.Linear(PRIOR_HIDDEN, 2 * latent_dim))
                          if prior == "learned" else None)
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
        if self.prior_net is not None:
            followed_by_relu.add(self.prior_net[0])
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                gain = 2.0 ** 0.5 if module in followed_by_relu else 1.0
                _kaiming_normal(module, gain)
                nn.init.zeros_(module.bias)
        if self.prior_net is not None:  # the learned prior starts as N(0, I)
            nn.init.zeros_(self.prior_net[-1].weight)

    def prior_params(self, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """μ_p and log σ_p² of p(z|x): zeros for the standard prior, the MLP's output when learned."""
        if self.prior_net is None:
            zeros = condition.new_zeros(condition.shape[0], self.latent_dim)
            return zeros, zeros
        mu, logvar = self.prior_net(condition.to(self.prior_net[0].weight.dtype)).chunk(2, dim=1)
        return mu, logvar

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
        extras = {}
        if self.prior_net is not None:
            extras["prior_mu"], extras["prior_logvar"] = self.prior_params(condition)
        return genkit.ModelOutput(reconstruction=self.decode(z, condition), mu=mu, logvar=logvar, z=z,
                                  extras=extras)

    @property
    def noise_shape(self) -> tuple[int]:
        """One sample's noise is a latent vector: ε ~ N(0, I) of ``latent_dim`` values."""
        return (self.latent_dim,)

    @torch.no_grad()
    def sample(self, condition: torch.Tensor, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None, *, temperature: float = 1.0) -> torch.Tensor:
        """Images for each condition row, with z drawn from the prior p(z|x).

        ``noise`` is the prior's standard-normal noise ε, scaled by the temperature: with the
        standard prior z = T·ε; with the learned one z = μ_p(x) + σ_p(x)·T·ε, so the same noise
        gives corresponding images across conditions with either prior. :meth:`decode` decodes
        a z as it is.

        :param temperature: scale of the prior noise, in (0, 100]: below 1 nearer the mode, above 1
            more varied.
        """
        if noise is None:
            noise = torch.randn(condition.shape[0], self.latent_dim, generator=generator,
                                device=condition.device if generator is None else generator.device)
        z = noise.to(condition.device) * temperature
        if self.prior_net is not None:
            prior_mu, prior_logvar = self.prior_params(condition)
            z = prior_mu + torch.exp(0.5 * prior_logvar) * z.to(prior_mu.dtype)
        return self.decode(z, condition)

    @staticmethod
    def check_sampling_options(temperature: float) -> None:
        if not 0 < temperature <= MAX_TEMPERATURE:
            raise genkit.UsageError(f"--temperature {temperature:g} is outside (0, {MAX_TEMPERATURE:g}]; choose for "
                                    "example 1.0 (below 1 nearer the mode, above 1 more varied)")


def nearest_sizes(height: int, width: int, multiple: int) -> str:
    """The sizes nearest ``height``x``width`` with both sides divisible by ``multiple``: ``"16x16 or 20x20"``."""
    def down(n: int) -> int:
        return max(multiple, n // multiple * multiple)

    def up(n: int) -> int:
        return -(-n // multiple) * multiple

    sizes = dict.fromkeys(f"{h}x{w}" for h, w in ((down(height), down(width)), (up(height), up(width))))
    return " or ".join(sizes)


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
          channels: list[int] = (32, 64), kernel_size: int = 3, prior: str = "standard") -> CVAE:
    """The paper's shallow CNN-CVAE: two conv blocks, linear heads, two transposed convs.

    :param latent_dim: size of z.
    :param channels: widths of the two convolution blocks.
    :param kernel_size: odd kernel size of the encoder's convolutions.
    :param prior: standard N(0, I) (the paper's) or learned p(z|x) (Sohn et al.'s conditional
        prior; genkit's default recipe chooses it).
    """
    return CVAE(tuple(image_shape), conditioner, latent_dim=latent_dim, channels=tuple(channels),
                kernel_size=kernel_size, prior=prior)


@genkit.hookimpl
def register_models(register):
    register("cvae", build, flags=("latent_dim", "prior"))
