"""The likelihood metrics of ``genkit evaluate``, for a model with a posterior or a likelihood of its own.

Decoder likelihood. The decoder outputs a mean image ŷ(x, z) in [0, 1]; genkit scores it with a
Gaussian of fixed standard deviation σ on every pixel and channel, p(y|x,z) = N(y; ŷ, σ²I)
(σ = 0.1 by default, in the units of pixels scaled to [0, 1]). With D = 3·H·W values per image:

    log p(y|x,z) = −SSE(y, ŷ) / (2σ²) − (D/2)·log(2πσ²)

It is a density over R^D, so the bounds below are true bounds of that model's log-likelihood, in
nats per image (higher is better); they are comparable between runs evaluated with the same σ.

* ``mse``: E_q[SSE] per image, the squared error summed over pixels and channels, averaged over
  the S draws z_s ~ q(z|x,y) (the usual ``mse`` loss term); ``mse_per_pixel`` = mse / D.
* ``kl``: KL(q(z|x,y) ‖ p(z|x)) in closed form; p(z|x) = N(0, I), or the model's conditional
  prior when it returns one (``extras["prior_mu"]``, ``extras["prior_logvar"]``).
* ``elbo`` = −mse/(2σ²) − (D/2)·log(2πσ²) − kl.
* ``cll``: Sohn et al.'s importance-sampled conditional log-likelihood,
  log p(y|x) ≈ logsumexp_s[log p(y|x,z_s) + log p(z_s|x) − log q(z_s|x,y)] − log S on the same
  S draws. Its expectation lies between the ELBO and log p(y|x).

* ``log_likelihood``: the model's own ``log_likelihood(images, condition)`` (exact or a bound,
  as the model defines it), nats per image: comparable only between runs of the same model.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from genkit.components.limits import check_seed, derived_seed
from genkit.errors import UsageError
from genkit.evaluation.gaussian import gaussian_kl
from genkit.runtime.memory import items_that_fit, require_memory
from genkit.sampling import capabilities
from genkit.sampling.run import Run
from genkit_datasets.torch_dataset import CachedImageDataset

#: ``progress(stage, done, total)``; stages: "likelihood", then "samples".
EvalProgress = Callable[[str, int, int], None]

DEFAULT_SIGMA = 0.1


DEFAULT_SAMPLES = 100


LOG_2PI = math.log(2 * math.pi)


#: the keys of the likelihood bounds, ``None`` for a model without a posterior
BOUND_KEYS = ("mse", "mse_per_pixel", "kl", "elbo", "cll", "cll_ge_elbo_fraction")


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; μ, diag(exp(logvar))) summed over the last dimension."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp()).sum(dim=-1)


def prior(model, condition: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """μ and log σ² of the model's prior p(z|x): its ``prior_params(condition)``, or N(0, I) without one."""
    params = getattr(model, "prior_params", None)
    if callable(params):
        mu, logvar = params(condition)
        return mu.float(), logvar.float()
    return torch.zeros_like(like), torch.zeros_like(like)


#: σ must keep σ² a normal, finite float64: the likelihood divides by 2σ² and takes log(2πσ²)
SIGMA_RANGE = (1e-150, 1e150)


def check_settings(samples: int, sigma: float, seed: int = 0) -> None:
    """A :class:`UsageError` unless ``samples`` is a positive integer, ``sigma`` a positive number whose
    square float64 holds, and ``seed`` a seed (0 ... 2**63 - 1)."""
    if samples < 1:
        raise UsageError(f"--samples {samples} must be a positive integer (the default is 100)")
    if not (sigma > 0 and math.isfinite(sigma)):
        raise UsageError(f"--sigma {sigma} must be a positive number, for example 0.1")
    low, high = SIGMA_RANGE
    if not low <= sigma <= high:
        raise UsageError(f"--sigma {sigma:g} is too {'small' if sigma < low else 'large'}: the likelihood needs σ² as "
                         f"a number, so σ must lie between {low:g} and {high:g}; for example --sigma 0.1")
    check_seed(seed)


def check_samples_fit(model, samples: int, batch_size: int) -> None:
    """Refuse ``samples`` importance samples per image whose draws cannot fit in memory, before any work.

    :func:`likelihood_bounds` holds, for each of ``batch_size`` images, every draw of z (float32)
    and two float64 figures per draw at once.
    """
    latent = math.prod(capabilities.noise_shape(model))  # a VAE's noise is its latent vector
    per_sample = batch_size * (4 * latent + 16)
    fits = items_that_fit(per_sample)
    require_memory(samples * per_sample, f"--samples {samples} ({batch_size} images at a time, {latent} latent "
                   "values per draw)", f"ask for at most --samples {fits}")


@torch.no_grad()
def likelihood_bounds(model, images: torch.Tensor, condition: torch.Tensor, samples: int = DEFAULT_SAMPLES,
                      sigma: float = DEFAULT_SIGMA, generator: torch.Generator | None = None,
                      chunk: int = 1024) -> dict[str, torch.Tensor]:
    """Per-image ``mse``, ``kl``, ``elbo`` and ``cll`` (float64, shape (B,)) for images in [0, 1].

    See the module docstring for the definitions; ``model`` must have a posterior
    (``encode``/``decode``). ``chunk`` bounds how many images are decoded at once.
    """
    check_settings(samples, sigma)
    if not capabilities.has(model, "posterior"):
        raise UsageError(f"{type(model).__name__} has no posterior (encode and decode): the likelihood bounds "
                         "need one")
    mu, logvar = (t.float() for t in model.encode(images, condition))
    prior_mu, prior_logvar = prior(model, condition, mu)
    decode = model.decode
    b, latent = mu.shape
    pixels = images[0].numel()
    log_norm = -0.5 * pixels * math.log(2 * math.pi * sigma ** 2)
    eps = torch.randn(samples, b, latent, generator=generator).to(mu.device)
    std = torch.exp(0.5 * logvar)
    sse = torch.empty(samples, b, dtype=torch.float64, device=mu.device)
    log_w = torch.empty(samples, b, dtype=torch.float64, device=mu.device)
    per_chunk = max(1, chunk // b)
    target = images.float()
    for s0 in range(0, samples, per_chunk):
        s1 = min(samples, s0 + per_chunk)
        z = mu + std * eps[s0:s1]                                       # (s, b, L)
        flat = z.reshape(-1, latent)
        recon = decode(flat, condition.repeat(s1 - s0, 1)).float().reshape(s1 - s0, b, *images.shape[1:])
        err = (recon - target).pow(2).flatten(2).sum(dim=2).double()    # (s, b)
        sse[s0:s1] = err
        log_prior = log_normal(z, prior_mu, prior_logvar)
        log_q = -0.5 * (LOG_2PI + logvar + eps[s0:s1].pow(2)).sum(dim=-1)
        log_w[s0:s1] = -err / (2 * sigma ** 2) + log_norm + (log_prior - log_q).double()
    kl = gaussian_kl(mu, logvar, prior_mu, prior_logvar)
    mse = sse.mean(dim=0)
    kl = kl.double()
    return {
        "mse": mse,
        "kl": kl,
        "elbo": -mse / (2 * sigma ** 2) + log_norm - kl,
        "cll": torch.logsumexp(log_w, dim=0) - math.log(samples),
    }


def bound_means(bounds: tuple[dict[str, float], int], n: int, pixels: int) -> dict[str, float]:
    sums, cll_ge_elbo = bounds
    mse = sums["mse"] / n
    return {"mse": mse, "mse_per_pixel": mse / pixels, "kl": sums["kl"] / n, "elbo": sums["elbo"] / n,
            "cll": sums["cll"] / n, "cll_ge_elbo_fraction": cll_ge_elbo / n}


def own_likelihood(run: Run, dataset: CachedImageDataset, seed: int, batch_size: int) -> float:
    """The mean of the model's own ``log_likelihood`` over the split, nats per image."""
    generator = torch.Generator(run.device).manual_seed(derived_seed(seed, 6))  # 4 and 5: edits, conformity
    images_u8, attributes, total = dataset.images_uint8(), dataset.attributes, 0.0
    for start in range(0, len(dataset), batch_size):
        images = images_u8[start:start + batch_size].to(run.device).float().div_(255)
        cond = attributes[start:start + batch_size].to(run.device)
        total += float(run.model.log_likelihood(images, cond, generator=generator).double().sum())
    return total / len(dataset)


def likelihood_sums(run: Run, dataset: CachedImageDataset, samples: int, sigma: float, seed: int, batch_size: int,
                progress: EvalProgress | None) -> tuple[dict[str, float], int]:
    """Sums over the split of the per-image bounds, and how many images have cll ≥ elbo."""
    generator = torch.Generator().manual_seed(seed)
    images_u8, attributes, n = dataset.images_uint8(), dataset.attributes, len(dataset)
    sums = {k: 0.0 for k in ("mse", "kl", "elbo", "cll")}
    cll_ge_elbo = 0
    for start in range(0, n, batch_size):
        images = images_u8[start:start + batch_size].to(run.device).float().div_(255)
        cond = attributes[start:start + batch_size].to(run.device)
        bounds = likelihood_bounds(run.model, images, cond, samples, sigma, generator)
        for key in sums:
            sums[key] += float(bounds[key].sum())
        cll_ge_elbo += int((bounds["cll"] >= bounds["elbo"]).sum())
        if progress:
            progress("likelihood", min(n, start + batch_size), n)
    return sums, cll_ge_elbo
