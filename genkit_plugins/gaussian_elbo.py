"""Loss ``gaussian-elbo``: the ELBO of a calibrated Gaussian decoder (σ-VAE, Rybkin et al. 2021).

``beta-elbo``'s (1 − β)·SSE + β·KL is, up to a factor, the ELBO of a Gaussian decoder whose
variance per pixel is fixed at σ² = β / (2(1 − β)): 1.5 at β = 0.75, wider than the pixel range,
so nothing is worth encoding in z and the posterior collapses. This loss states the decoder's
likelihood explicitly, p(y | x, z) = N(y; ŷ, σ²I) with one σ for every pixel and channel, and
minimises the negative ELBO per image:

    nll = SSE / (2σ²) + D·log σ + (D/2)·log 2π        (D = C·H·W values per image)
    total = nll + kl_weight · KL(q(z|x,y) ‖ p(z|x))

``sigma`` chooses σ: ``"learned"`` (log σ is a parameter of the loss, trained by the optimizer
with the model's weights, saved in the run folder and in checkpoints), ``"optimal"`` (σ² is the
batch's mean squared error per value, the σ that minimises nll for the batch; no parameter), or a
positive number (fixed). A learned log σ is soft-clipped from below at ``log_sigma_floor``
(log σ ← floor + softplus(log σ − floor), as in σ-VAE, so its gradient never vanishes abruptly);
the optimal one, a constant of each step (no gradient flows through it), is clamped there. ``free_bits`` (nats per latent
dimension, 0 = off) charges each latent dimension at least that much KL (batch-averaged), so the
optimiser gains nothing by collapsing a dimension onto the prior.

Terms (per image, averaged over the batch): ``nll``, ``mse`` (the SSE, as ``beta-elbo``'s),
``kl`` (the true KL, before free bits and weighting) and ``sigma``. A learned σ whose raw value is
below the floor (where the soft clip takes over), or an optimal σ clipped in some batches, is
reported at the end of the epoch through :meth:`GaussianELBO.warnings`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

import genkit
from genkit.plugin_api import float32_option, gaussian_kl

SIGMA_MODES = ("learned", "optimal")
LOG_2PI = math.log(2 * math.pi)
#: a fixed σ whose 2σ² float32 holds as a normal number (the loss divides by it)
SIGMA_RANGE = (1e-18, 1e18)
#: log σ floors whose σ² = exp(2·floor) float32 holds as a normal number
LOG_SIGMA_FLOOR_RANGE = (-43.0, 44.0)


def softclip(x: torch.Tensor, floor: float) -> torch.Tensor:
    """``floor + softplus(x − floor)``: x where x ≫ floor, never below floor, smooth everywhere."""
    return floor + F.softplus(x - floor)


def parse_sigma(sigma) -> str | float:
    """``"learned"``, ``"optimal"`` or a positive finite float; a one-line :class:`UsageError` otherwise."""
    if isinstance(sigma, str):
        text = sigma.strip().lower()
        if text in SIGMA_MODES:
            return text
        try:
            value = float(text)
        except ValueError:
            raise genkit.UsageError(f"sigma {sigma!r} is not known; use learned, optimal or a positive number such as "
                             f"0.1, for example --loss-opt sigma=learned") from None
    elif isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        try:
            value = float(sigma)
        except OverflowError:  # a whole number beyond every float
            value = math.inf
    else:
        raise genkit.UsageError(f"sigma {sigma!r} is not valid; use learned, optimal or a positive number such as 0.1")
    if not (value > 0 and math.isfinite(value)):
        raise genkit.UsageError(f"sigma {sigma} must be a positive number (or learned, optimal), for example "
                         f"--loss-opt sigma=0.1")
    if not SIGMA_RANGE[0] <= value <= SIGMA_RANGE[1]:  # the loss divides by 2σ², in float32
        raise genkit.UsageError(f"sigma {value:g} is outside {SIGMA_RANGE[0]:g} to {SIGMA_RANGE[1]:g}, where 2σ² "
                                "stays a float32 number; choose for example --loss-opt sigma=0.1")
    return value


class GaussianELBO(nn.Module):
    """A loss that is a ``torch.nn.Module``: with ``sigma="learned"`` it owns the parameter ``log_sigma``."""

    def __init__(self, sigma: str | float = "learned", kl_weight: float = 1.0, log_sigma_floor: float = -6.0,
                 free_bits: float = 0.0):
        super().__init__()
        self.sigma_mode = parse_sigma(sigma)
        for name, value in (("kl_weight", kl_weight), ("free_bits", free_bits)):
            example = "1" if name == "kl_weight" else "0.1"
            if float32_option(name, value, example) < 0:  # a number float32 holds: used in float32 below
                raise genkit.UsageError(f"{name} {value!r} must be zero or a positive number, for example "
                                        f"--loss-opt {name}={example}")
        floor = float32_option("log_sigma_floor", log_sigma_floor, -6)
        if not LOG_SIGMA_FLOOR_RANGE[0] <= floor <= LOG_SIGMA_FLOOR_RANGE[1]:
            raise genkit.UsageError(f"log_sigma_floor {floor:g} is outside {LOG_SIGMA_FLOOR_RANGE[0]:g} to "
                                    f"{LOG_SIGMA_FLOOR_RANGE[1]:g}, where σ² = exp(2·floor) stays a float32 number; "
                                    "for example --loss-opt log_sigma_floor=-6")
        self.kl_weight = float(kl_weight)
        self.free_bits = float(free_bits)
        self.floor = floor
        if self.sigma_mode == "learned":
            self.log_sigma = nn.Parameter(torch.zeros(()))  # σ = 1 at the start
        # Batches whose optimal σ fell below the floor, counted on the device (no host sync per step).
        self._clipped = torch.zeros((), dtype=torch.long)
        self._batches = torch.zeros((), dtype=torch.long)

    def _log_sigma(self, sse: torch.Tensor, values: int) -> torch.Tensor:
        if self.sigma_mode == "learned":
            return softclip(self.log_sigma.float(), self.floor)
        if self.sigma_mode == "optimal":
            raw = 0.5 * torch.log(sse.detach().mean() / values)   # σ² = mean squared error per value
            if self._clipped.device != raw.device:
                self._clipped, self._batches = self._clipped.to(raw.device), self._batches.to(raw.device)
            self._clipped += (raw < self.floor).long()
            self._batches += 1
            return raw.clamp_min(self.floor)  # a constant of the step: a hard floor has no gradient to spoil
        return torch.tensor(math.log(self.sigma_mode), device=sse.device)

    def forward(self, output: genkit.ModelOutput, images: torch.Tensor) -> genkit.LossResult:
        recon, target = output.reconstruction.float(), images.float()
        sse = (target - recon).pow(2).flatten(1).sum(dim=1)
        values = target[0].numel()
        log_sigma = self._log_sigma(sse, values)
        nll = (sse / (2 * torch.exp(2 * log_sigma)) + values * (log_sigma + 0.5 * LOG_2PI)).mean()
        mu, logvar = output.mu.float(), output.logvar.float()
        prior_mu, prior_logvar = output.extras.get("prior_mu"), output.extras.get("prior_logvar")
        if prior_mu is not None:
            prior_mu, prior_logvar = prior_mu.float(), prior_logvar.float()
        kl_dims = gaussian_kl(mu.unsqueeze(-1), logvar.unsqueeze(-1),
                              None if prior_mu is None else prior_mu.unsqueeze(-1),
                              None if prior_logvar is None else prior_logvar.unsqueeze(-1))  # (B, L)
        kl = kl_dims.sum(dim=1).mean()
        charged = kl if self.free_bits == 0 else kl_dims.mean(dim=0).clamp_min(self.free_bits).sum()
        total = nll + self.kl_weight * charged
        return genkit.LossResult(total=total, terms={"nll": nll, "mse": sse.mean(), "kl": kl,
                                                     "sigma": torch.exp(log_sigma).detach()})

    def warnings(self) -> list[str]:
        """Problems of the epoch just trained, for the epoch line; called once per epoch, then reset."""
        found = []
        if self.sigma_mode == "learned":
            raw = float(self.log_sigma.detach())
            if raw < self.floor:
                found.append(f"learned sigma is at its clip floor (sigma {math.exp(softclip(torch.tensor(raw), self.floor)):.4g}, "
                             f"log_sigma_floor {self.floor:g}); lower it with --loss-opt log_sigma_floor="
                             f"{self.floor - 2:g} or check the decoder")
        elif self.sigma_mode == "optimal":
            clipped, batches = int(self._clipped), int(self._batches)
            if clipped:
                found.append(f"optimal sigma hit its clip floor in {clipped} of {batches} batches "
                             f"(log_sigma_floor {self.floor:g}); lower it with --loss-opt log_sigma_floor="
                             f"{self.floor - 2:g}")
            self._clipped.zero_()
            self._batches.zero_()
        return found


def build(sigma: str | float = "learned", kl_weight: float = 1.0, log_sigma_floor: float = -6.0,
          free_bits: float = 0.0) -> GaussianELBO:
    """Calibrated Gaussian decoder ELBO (σ-VAE): σ learned, optimal per batch or fixed; KL weight.

    :param sigma: the decoder's σ on pixels in [0, 1]: learned (trained with the model), optimal
        (each batch's RMS error) or a positive number (fixed).
    :param kl_weight: weight of the KL term, 0 or more; 1 is the ELBO itself.
    :param log_sigma_floor: soft lower bound of log σ, for stability.
    :param free_bits: nats of KL per latent dimension that cost nothing (0: off).
    """
    return GaussianELBO(sigma, kl_weight=kl_weight, log_sigma_floor=log_sigma_floor, free_bits=free_bits)


@genkit.hookimpl
def register_losses(register):
    register("gaussian-elbo", build, flags={"sigma": "--decoder-sigma", "kl_weight": "--kl-weight"})
