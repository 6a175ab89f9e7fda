"""Loss ``gaussian-elbo``: the Gaussian NLL by hand, optimal σ, a learned σ saved, restored and resumed
exactly, the clip-floor warning, and every bad option."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import genkit
import genkit.training.checkpoints
from genkit.cli.app import build_app
from genkit_plugins.beta_elbo import gaussian_kl
from genkit_plugins.gaussian_elbo import GaussianELBO, build, softclip

TINY = ["--data-opt", "count=160", "--data-opt", "seed=5", "--image-size", "16", "--batch-size", "16",
        "--latent-dim", "4", "--model-opt", "channels=[8,16]", "--loss", "gaussian-elbo"]


def _output(seed: int = 0, batch: int = 3, latent: int = 4) -> tuple[genkit.ModelOutput, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, 4, 5, generator=g)
    recon = torch.rand(batch, 3, 4, 5, generator=g)
    mu, logvar = torch.randn(batch, latent, generator=g), torch.randn(batch, latent, generator=g) * 0.3
    return genkit.ModelOutput(reconstruction=recon, mu=mu, logvar=logvar), images


def _hand_nll(recon: torch.Tensor, images: torch.Tensor, sigma: float) -> float:
    """−Σ log N(y; ŷ, σ²) per image, written out value by value, averaged over the batch."""
    per_image = []
    for y_img, r_img in zip(images.double().tolist(), recon.double().flatten(1).tolist()):
        flat = torch.tensor(y_img, dtype=torch.float64).flatten().tolist()
        per_image.append(sum((y - r) ** 2 / (2 * sigma ** 2) + math.log(sigma) + 0.5 * math.log(2 * math.pi)
                             for y, r in zip(flat, r_img)))
    return sum(per_image) / len(per_image)


def test_fixed_sigma_nll_matches_a_hand_computation_and_total_adds_the_weighted_kl():
    output, images = _output()
    loss = build(sigma=0.3, kl_weight=0.5)
    result = loss(output, images)
    assert float(result.terms["nll"]) == pytest.approx(_hand_nll(output.reconstruction, images, 0.3), rel=1e-5)
    assert float(result.terms["sigma"]) == pytest.approx(0.3)
    sse = (output.reconstruction - images).pow(2).flatten(1).sum(1).mean()
    assert float(result.terms["mse"]) == pytest.approx(float(sse))
    kl = gaussian_kl(output.mu, output.logvar).mean()
    assert float(result.terms["kl"]) == pytest.approx(float(kl), rel=1e-6)
    assert float(result.total) == pytest.approx(float(result.terms["nll"]) + 0.5 * float(kl), rel=1e-6)
    assert list(loss.state_dict()) == [] and list(loss.parameters()) == []  # a fixed σ is no state


def test_optimal_sigma_is_the_batch_rms_error_and_minimises_the_nll():
    output, images = _output(seed=1)
    result = build(sigma="optimal")(output, images)
    rms = float((output.reconstruction - images).pow(2).mean().sqrt())
    assert float(result.terms["sigma"]) == pytest.approx(rms, rel=1e-5)
    assert float(result.terms["nll"]) == pytest.approx(_hand_nll(output.reconstruction, images, rms), rel=1e-5)
    for other in (rms * 0.9, rms * 1.1):
        assert float(result.terms["nll"]) < _hand_nll(output.reconstruction, images, other)


def test_the_kl_uses_the_models_conditional_prior_and_free_bits_charge_a_floor_per_dimension():
    output, images = _output(seed=2)
    prior_mu, prior_logvar = torch.randn(3, 4), torch.randn(3, 4) * 0.2
    output.extras.update(prior_mu=prior_mu, prior_logvar=prior_logvar)
    plain = build(sigma=0.2)(output, images)
    assert float(plain.terms["kl"]) == pytest.approx(
        float(gaussian_kl(output.mu, output.logvar, prior_mu, prior_logvar).mean()), rel=1e-6)
    per_dim = gaussian_kl(output.mu.unsqueeze(-1), output.logvar.unsqueeze(-1), prior_mu.unsqueeze(-1),
                          prior_logvar.unsqueeze(-1)).mean(0)
    free = build(sigma=0.2, free_bits=0.8)(output, images)
    assert float(free.terms["kl"]) == pytest.approx(float(plain.terms["kl"]))  # the true KL is still reported
    charged = float(per_dim.clamp_min(0.8).sum())
    assert float(free.total) == pytest.approx(float(free.terms["nll"]) + charged, rel=1e-6)


def test_learned_sigma_is_a_trained_parameter_soft_clipped_at_the_floor():
    output, images = _output(seed=3)
    loss = build(sigma="learned", log_sigma_floor=-2.0)
    assert [name for name, _ in loss.named_parameters()] == ["log_sigma"]
    assert float(loss(output, images).terms["sigma"]) == pytest.approx(math.exp(float(softclip(torch.zeros(()), -2.0))))
    with torch.no_grad():
        loss.log_sigma.fill_(-50.0)
    assert float(loss(output, images).terms["sigma"]) == pytest.approx(math.exp(-2.0), rel=1e-6)
    assert loss.warnings() and "clip floor" in loss.warnings()[0]
    with torch.no_grad():
        loss.log_sigma.fill_(0.0)
    loss(output, images).total.backward()
    assert loss.log_sigma.grad is not None and float(loss.log_sigma.grad) != 0.0
    assert loss.warnings() == []


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _train(args: list[str]):
    return CliRunner().invoke(build_app(), ["train", *TINY, *args])


def test_learned_sigma_is_saved_in_run_and_checkpoint_and_resume_is_bit_identical(tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert _train(["--epochs", "3", "--out", str(straight)]).exit_code == 0
    assert _train(["--epochs", "1", "--out", str(stopped)]).exit_code == 0
    checkpoint = genkit.training.checkpoints.latest_checkpoint(stopped)
    assert set(_weights(checkpoint / "loss.safetensors")) == {"log_sigma"}
    first_sigma = _weights(stopped / "loss.safetensors")["log_sigma"]
    assert not torch.equal(first_sigma, torch.zeros(())), "σ did not train"
    result = CliRunner().invoke(build_app(), ["train", "--resume", str(stopped), "--epochs", "3"])
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "loss.safetensors"):
        a, b = _weights(straight / name), _weights(stopped / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert not torch.equal(_weights(stopped / "loss.safetensors")["log_sigma"], first_sigma)

    def losses(run):
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("images_per_s", "seconds")} for r in records]

    assert losses(stopped) == losses(straight) and "train_sigma" in losses(straight)[0]
    run = genkit.load_run(stopped, device="cpu")
    assert torch.equal(run.loss.log_sigma.detach(), _weights(stopped / "loss.safetensors")["log_sigma"])


def test_losses_without_state_write_no_loss_file(tmp_path):
    for sigma in ("optimal", "0.1"):
        out = tmp_path / sigma
        assert _train(["--epochs", "1", "--loss-opt", f"sigma={sigma}", "--out", str(out)]).exit_code == 0
        assert not (out / "loss.safetensors").exists()
        assert not (genkit.training.checkpoints.latest_checkpoint(out) / "loss.safetensors").exists()
        assert genkit.load_run(out, device="cpu").sample("shape::circle", n=2).shape == (2, 3, 16, 16)


def test_a_learned_sigma_at_its_clip_floor_is_reported_in_the_epoch_line(tmp_path):
    out = tmp_path / "floor"
    result = _train(["--epochs", "1", "--loss-opt", "log_sigma_floor=1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    epoch_line = next(line for line in result.stderr.splitlines() if line.startswith("epoch 1"))
    assert "warning: learned sigma is at its clip floor" in epoch_line
    assert "--loss-opt log_sigma_floor=-1" in epoch_line
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert record["warnings"] and "clip floor" in record["warnings"][0]


@pytest.mark.parametrize("option, message", [
    ("sigma=0", "sigma 0 must be a positive number (or learned, optimal), for example --loss-opt sigma=0.1"),
    ("sigma=-0.5", "sigma -0.5 must be a positive number (or learned, optimal)"),
    ("sigma=nan", "sigma nan must be a positive number"),
    ("sigma=abc", "sigma 'abc' is not known; use learned, optimal or a positive number such as 0.1"),
    ("sigma=true", "option sigma is True, but it must be text or a number"),
    ("kl_weight=-1", "kl_weight -1 must be zero or a positive number, for example --loss-opt kl_weight=1"),
    ("free_bits=-0.1", "free_bits -0.1 must be zero or a positive number"),
    ("log_sigma_floor=low", "option log_sigma_floor is 'low', but it must be a number, like log_sigma_floor=-6.0"),
])
def test_bad_options_are_one_line_exit_2_and_nothing_written(tmp_path, option, message):
    out = tmp_path / "run"
    result = _train(["--epochs", "1", "--loss-opt", option, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in " ".join(lines[0].split()), result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()


def test_the_loss_is_registered_and_beta_elbo_is_unchanged():
    assert "gaussian-elbo" in genkit.registry("losses")
    assert isinstance(genkit.registry("losses").get("gaussian-elbo").create(), GaussianELBO)
    output, images = _output(seed=4)
    result = genkit.registry("losses").get("beta-elbo").create(beta=0.75)(output, images)
    sse = (output.reconstruction - images).pow(2).flatten(1).sum(1).mean()
    kl = gaussian_kl(output.mu, output.logvar).mean()
    assert float(result.total) == pytest.approx(float(0.25 * sse + 0.75 * kl), rel=1e-6)
