"""Loss ``beta-elbo``: (1 − β)·MSE + β·KL, the paper's eq. 9 and 10.

Reduction: MSE is the squared error summed over every pixel and channel of an image; KL is
KL(q(z|x,y) ‖ p(z)) summed over the latent dimensions; both are then averaged over the batch.
So ``mse`` and ``kl`` are per-image figures, as in the paper's Table 1. The prior p(z) is N(0, I)
unless the model returns a conditional prior (``extras["prior_mu"]``, ``extras["prior_logvar"]``),
in which case the KL between the two diagonal Gaussians is used in closed form.
"""

from __future__ import annotations

import torch

import genkit
from genkit.plugin_api import gaussian_kl


class BetaELBO:
    def __init__(self, beta: float = 0.75):
        if not 0.0 <= beta <= 1.0:
            raise genkit.UsageError(f"beta {beta} is outside [0, 1]; the paper uses 0.25, 0.5, 0.75 or 0.9")
        self.beta = float(beta)

    def __call__(self, output: genkit.ModelOutput, images: torch.Tensor) -> genkit.LossResult:
        recon = output.reconstruction.float()
        mse = (recon - images.float()).pow(2).flatten(1).sum(dim=1).mean()
        kl = gaussian_kl(output.mu.float(), output.logvar.float(), output.extras.get("prior_mu"),
                         output.extras.get("prior_logvar")).mean()
        total = (1.0 - self.beta) * mse + self.beta * kl
        return genkit.LossResult(total=total, terms={"mse": mse, "kl": kl})


def build(beta: float = 0.75) -> BetaELBO:
    """(1−β)·MSE + β·KL; MSE summed over pixels, KL over latents, both averaged over the batch.

    :param beta: β of the β-ELBO, in [0, 1]; the paper uses 0.25, 0.5, 0.75 or 0.9.
    """
    return BetaELBO(beta)


@genkit.hookimpl
def register_losses(register):
    register("beta-elbo", build, flags=("beta",))
