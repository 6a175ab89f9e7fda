"""The CVAE's shapes and initialisation; the β-ELBO against hand computation and Monte Carlo."""

from __future__ import annotations

import pytest
import torch

import genkit
from genkit.errors import UsageError
from genkit.plugin_api import gaussian_kl
from genkit_plugins.beta_elbo import BetaELBO
from genkit_plugins.cvae import CVAE
from genkit_plugins.tiled_onehot import TiledOneHot

NAMES = [f"a{i}" for i in range(5)]


@pytest.mark.parametrize("height, width", [(16, 16), (32, 24), (20, 36), (64, 64)])
@pytest.mark.parametrize("mode", ["fused", "naive"])
def test_cvae_output_shapes_for_square_and_non_square_images(height, width, mode):
    model = CVAE((3, height, width), TiledOneHot(NAMES, mode=mode), latent_dim=7, channels=(4, 8))
    images = torch.rand(2, 3, height, width)
    condition = torch.zeros(2, 5)
    out = model(images, condition)
    assert out.reconstruction.shape == (2, 3, height, width)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (2, 7)
    assert out["mu"] is out.mu  # mapping-style access works too
    assert 0 <= out.reconstruction.min() and out.reconstruction.max() <= 1
    samples = model.sample(condition, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 3, height, width)


def test_cvae_sample_is_deterministic_for_given_latents_and_uses_the_condition():
    torch.manual_seed(0)
    model = CVAE((3, 16, 16), TiledOneHot(NAMES), latent_dim=4, channels=(4, 8))
    z = torch.randn(2, 4)
    a = model.sample(torch.tensor([[1.0, 0, 0, 0, 0]] * 2), z)
    b = model.sample(torch.tensor([[1.0, 0, 0, 0, 0]] * 2), z)
    c = model.sample(torch.tensor([[0.0, 1, 0, 0, 0]] * 2), z)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_cvae_rejects_sizes_not_divisible_by_4():
    with pytest.raises(UsageError, match="image size 30x32 is not divisible by 4"):
        CVAE((3, 30, 32), TiledOneHot(NAMES))


@pytest.mark.parametrize("height, width, nearest", [
    (18, 18, "16x16 or 20x20"), (30, 32, "28x32 or 32x32"), (218, 178, "216x176 or 220x180"), (2, 6, "4x4 or 4x8"),
])
def test_cvae_size_error_suggests_the_nearest_sizes_that_fit(height, width, nearest):
    with pytest.raises(UsageError) as caught:
        CVAE((3, height, width), TiledOneHot(NAMES))
    assert str(caught.value).endswith(f"need; choose {nearest}")
    for size in nearest.split(" or "):  # the advice works as written
        CVAE((3, *map(int, size.split("x"))), TiledOneHot(NAMES), channels=(2, 2))


def test_cvae_initialisation_is_kaiming_normal_with_zero_biases():
    torch.manual_seed(0)
    model = CVAE((3, 64, 64), TiledOneHot(NAMES), latent_dim=32, channels=(32, 64))
    for module in model.modules():
        if hasattr(module, "bias") and isinstance(module.bias, torch.Tensor):
            assert torch.count_nonzero(module.bias) == 0
    # The last decoder layer is scaled to its true fan-in (64 channels... here 32 in, 2x2 taps),
    # so the first reconstructions sit near grey rather than saturating the sigmoid.
    std = model.dec_deconv2.weight.std().item()
    assert std == pytest.approx(1 / (32 * 4) ** 0.5, rel=0.1)
    out = model.sample(torch.zeros(64, 5), generator=torch.Generator().manual_seed(1))
    assert 0.35 < out.mean().item() < 0.65


def test_beta_elbo_matches_a_hand_computation():
    recon = torch.tensor([[[[0.5, 1.0]]], [[[0.0, 0.25]]]])  # (2, 1, 1, 2)
    images = torch.tensor([[[[0.0, 1.0]]], [[[1.0, 0.25]]]])
    mu = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    logvar = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    out = genkit.ModelOutput(reconstruction=recon, mu=mu, logvar=logvar)
    result = BetaELBO(beta=0.25)(out, images)
    # MSE summed over pixels, mean over the batch: ((0.25 + 0) + (1 + 0)) / 2
    assert result.terms["mse"].item() == pytest.approx(0.625)
    # KL per row: -0.5 * sum(1 + logvar - mu^2 - exp(logvar))
    kl0 = -0.5 * ((1 + 0 - 1 - 1) + (1 + 0 - 0 - 1))
    kl1 = -0.5 * ((1 + 1 - 0 - torch.e) + (1 + 0 - 4 - 1))
    assert result.terms["kl"].item() == pytest.approx((kl0 + float(kl1)) / 2, rel=1e-6)
    assert result.total.item() == pytest.approx(0.75 * 0.625 + 0.25 * (kl0 + float(kl1)) / 2, rel=1e-6)


@pytest.mark.parametrize("with_prior", [False, True])
def test_closed_form_kl_matches_monte_carlo(with_prior):
    torch.manual_seed(0)
    mu, logvar = torch.randn(3, 4), torch.randn(3, 4) * 0.5
    prior_mu = torch.randn(3, 4) if with_prior else torch.zeros(3, 4)
    prior_logvar = torch.randn(3, 4) * 0.5 if with_prior else torch.zeros(3, 4)
    closed = gaussian_kl(mu, logvar, prior_mu, prior_logvar) if with_prior else gaussian_kl(mu, logvar)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(prior_mu, (0.5 * prior_logvar).exp())
    z = q.sample((200_000,))
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean(0)
    torch.testing.assert_close(closed, monte_carlo, atol=0.03, rtol=0.02)


def test_beta_outside_unit_interval_is_a_usage_error():
    with pytest.raises(UsageError, match=r"beta 1.5 is outside \[0, 1\]"):
        BetaELBO(beta=1.5)
