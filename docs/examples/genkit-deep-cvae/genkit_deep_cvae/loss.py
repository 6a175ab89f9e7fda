"""Loss ``bernoulli-elbo``: binary cross-entropy reconstruction + β·KL, the Bernoulli ELBO.

Pixels in [0, 1] are read as Bernoulli probabilities. BCE is summed over every pixel and channel
of an image and KL(q(z|x,y) ‖ N(0, I)) over the latent dimensions; both are averaged over the
batch, like ``beta-elbo``'s terms. With β = 1 (the default) the total is the negative ELBO.
When the model returns ``extras["logits"]`` (``deep-cvae`` does) BCE is computed from the logits,
which is exact and stable; otherwise from ``reconstruction``, clamped away from 0 and 1, so the
loss works with any genkit model, the bundled ``cvae`` included.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

import genkit
from genkit.plugin_api import gaussian_kl

EPS = 1e-6


class BernoulliELBO:
    def __init__(self, beta: float = 1.0):
        if not beta >= 0.0:
            raise genkit.UsageError(f"beta {beta} must be zero or positive; 1.0 gives the plain ELBO")
        self.beta = float(beta)

    def __call__(self, output: genkit.ModelOutput, images: torch.Tensor) -> genkit.LossResult:
        target = images.float()
        logits = output.extras.get("logits")
        if logits is not None:
            bce = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
        else:  # written out: F.binary_cross_entropy refuses to run under autocast
            p = output.reconstruction.float().clamp(EPS, 1 - EPS)
            bce = -(target * p.log() + (1 - target) * (1 - p).log())
        bce = bce.flatten(1).sum(dim=1).mean()
        kl = gaussian_kl(output.mu.float(), output.logvar.float()).mean()
        with torch.no_grad():  # logged beside the loss, so runs compare with beta-elbo's mse
            mse = (output.reconstruction.float() - target).pow(2).flatten(1).sum(dim=1).mean()
        return genkit.LossResult(total=bce + self.beta * kl, terms={"bce": bce, "kl": kl, "mse": mse})


def build_loss(beta: float = 1.0) -> BernoulliELBO:
    """BCE + β·KL (the Bernoulli ELBO); BCE summed over pixels, KL over latents, batch-averaged."""
    return BernoulliELBO(beta)
