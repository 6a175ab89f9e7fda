"""The closed-form KL divergence between diagonal Gaussians: one definition for losses and evaluation.

A loss that trains with it (``beta-elbo``) and ``genkit evaluate``, which reports it, must agree
to the last bit, so both call this function; plugin authors get it as
``genkit.plugin_api.gaussian_kl``.
"""

from __future__ import annotations

import torch


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor, prior_mu: torch.Tensor | None = None,
                prior_logvar: torch.Tensor | None = None) -> torch.Tensor:
    """KL(N(mu, σ²) ‖ N(prior_mu, σ_p²)) per row, summed over the last dimension.

    With no prior given, the prior is N(0, I): −½ Σ (1 + log σ² − μ² − σ²) (the paper's eq. 10).
    Otherwise ½ Σ (log σ_p² − log σ² + (σ² + (μ − μ_p)²) / σ_p² − 1).
    """
    if prior_mu is None:
        return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)
    return 0.5 * torch.sum(
        prior_logvar - logvar + (logvar.exp() + (mu - prior_mu).pow(2)) / prior_logvar.exp() - 1, dim=-1
    )
