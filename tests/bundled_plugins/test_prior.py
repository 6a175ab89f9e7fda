"""Sohn et al.'s conditional prior: the closed-form KL, the cvae's `prior` option, sampling from p(z|x)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

import genkit
from genkit.cli.app import build_app
from genkit.evaluation.likelihood import likelihood_bounds, log_normal
from genkit.plugin_api import gaussian_kl
from genkit_plugins.beta_elbo import BetaELBO
from genkit_plugins.cvae import CVAE
from genkit_plugins.tiled_onehot import TiledOneHot

NAMES = ["a", "b", "c"]
TINY = ["--data-opt", "count=160", "--data-opt", "seed=3", "--image-size", "16", "--epochs", "1", "--limit", "64",
        "--latent-dim", "4", "--batch-size", "16"]


def test_closed_form_kl_of_two_diagonal_gaussians_matches_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.randn(4, 6), torch.randn(4, 6) * 0.7
    prior_mu, prior_logvar = torch.randn(4, 6), torch.randn(4, 6) * 0.7
    z = mu + torch.exp(0.5 * logvar) * torch.randn(200_000, 4, 6)
    monte_carlo = (log_normal(z, mu, logvar) - log_normal(z, prior_mu, prior_logvar)).mean(dim=0)
    closed = gaussian_kl(mu, logvar, prior_mu, prior_logvar)
    assert torch.allclose(closed, monte_carlo, rtol=0.03, atol=0.03)
    # and against torch.distributions, exactly
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(prior_mu, (0.5 * prior_logvar).exp())
    assert torch.allclose(closed, torch.distributions.kl_divergence(q, p).sum(-1), atol=1e-5)


def _learned(seed: int = 0) -> CVAE:
    torch.manual_seed(seed)
    return CVAE((3, 16, 16), TiledOneHot(NAMES), latent_dim=5, channels=(4, 8), prior="learned")


def test_learned_prior_starts_at_the_standard_normal_and_goes_out_in_extras():
    model = _learned()
    condition = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    out = model(torch.rand(2, 3, 16, 16), condition)
    assert set(out.extras) == {"prior_mu", "prior_logvar"}
    assert torch.count_nonzero(out.extras["prior_mu"]) == 0 and torch.count_nonzero(out.extras["prior_logvar"]) == 0
    standard = CVAE((3, 16, 16), TiledOneHot(NAMES), latent_dim=5, channels=(4, 8))
    assert standard(torch.rand(2, 3, 16, 16), condition).extras == {}


def test_learned_prior_learns_a_condition_dependent_prior_and_the_loss_uses_it():
    model = _learned()
    loss_fn = BetaELBO(0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    images, condition = torch.rand(8, 3, 16, 16), torch.eye(3)[torch.arange(8) % 3]
    for _ in range(5):
        result = loss_fn(model(images, condition), images)
        optimizer.zero_grad()
        result.total.backward()
        optimizer.step()
    with torch.no_grad():
        out = model(images, condition)
        prior_mu = out.extras["prior_mu"]
        assert not torch.allclose(prior_mu[0], prior_mu[1])  # rows 0 and 1 have different conditions
        assert torch.allclose(prior_mu[0], prior_mu[3])  # rows 0 and 3 share one
        expected = gaussian_kl(out.mu, out.logvar, out.extras["prior_mu"], out.extras["prior_logvar"]).mean()
        assert float(loss_fn(out, images).terms["kl"]) == pytest.approx(float(expected), rel=1e-5)


def test_sampling_draws_z_from_the_conditional_prior():
    model = _learned()
    with torch.no_grad():
        model.prior_net[-1].bias.copy_(torch.tensor([1.0, -1, 0.5, 0, 2] + [0.4, -0.6, 0, 0.2, -1]))
    condition = torch.tensor([[1.0, 0, 0]] * 3)
    eps = torch.randn(3, 5)
    prior_mu, prior_logvar = model.prior_params(condition)
    expected = model.decode(prior_mu + torch.exp(0.5 * prior_logvar) * eps, condition)
    assert torch.allclose(model.sample(condition, eps), expected)
    assert not torch.allclose(model.sample(condition, eps), model.decode(eps, condition))


def test_unknown_prior_is_refused():
    with pytest.raises(genkit.UsageError, match="prior 'gaussian' is not known; choose one of: standard, learned"):
        CVAE((3, 16, 16), TiledOneHot(NAMES), prior="gaussian")


def test_cll_is_at_least_the_elbo_with_a_learned_prior():
    model = _learned().eval()
    with torch.no_grad():
        model.prior_net[-1].bias.normal_()
    images, condition = torch.rand(6, 3, 16, 16), torch.eye(3)[torch.arange(6) % 3]
    bounds = likelihood_bounds(model, images, condition, samples=50, generator=torch.Generator().manual_seed(0))
    assert (bounds["cll"] >= bounds["elbo"]).all()
    out = model(images, condition)
    kl = gaussian_kl(out.mu, out.logvar, out.extras["prior_mu"], out.extras["prior_logvar"])
    assert torch.allclose(bounds["kl"].float(), kl, rtol=1e-5)


def test_train_prior_learned_from_the_cli_and_sample_from_it(tmp_path):
    runner = CliRunner()
    out = tmp_path / "learned"
    result = runner.invoke(build_app(), ["train", *TINY, "--prior", "learned", "--out", str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["options"]["prior"] == "learned"
    run = genkit.load_run(out, device="cpu")
    assert run.model.prior_net is not None
    assert run.sample("shape::circle", n=2).shape == (2, 3, 16, 16)
    assert math.isfinite(json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["val_kl"])

    bad = runner.invoke(build_app(), ["train", *TINY, "--prior", "flat", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2
    assert "prior 'flat' is not known; choose one of: standard, learned" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_a_config_written_before_the_prior_option_still_loads_with_the_standard_prior(tmp_path):
    runner = CliRunner()
    out = tmp_path / "old"
    assert runner.invoke(build_app(), ["train", *TINY, "--prior", "standard", "--out", str(out)]).exit_code == 0
    config = json.loads((out / "config.json").read_text())
    del config["model"]["options"]["prior"]
    (out / "config.json").write_text(json.dumps(config))
    run = genkit.load_run(out, device="cpu")
    assert run.model.prior == "standard" and run.model.prior_net is None
