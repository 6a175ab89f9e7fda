"""Any generative model is first-class: a third-party model without a posterior (no encoder, no latent
vector, image-shaped noise, sampling options of its own) trains, samples, evaluates, sweeps over a
sampling option without retraining and is served, with no faked fields; bad sampling options and
model/loss pairings are refused in one line before anything is written."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import pytest
import torch
from torch import nn

import genkit
from conftest import cli, error_line, invoke
from genkit.sampling import capabilities

TINY = ["--data", "shapes", "--data-opt", "count=160", "--data-opt", "seed=3", "--image-size", "8", "--epochs", "1",
        "--batch-size", "16", "--device", "cpu"]


@dataclass
class Denoised:
    """What the toy's training forward gives its loss: a prediction and its target (no mu, no logvar)."""

    prediction: torch.Tensor
    target: torch.Tensor


class NoisyRefiner(nn.Module):
    """A toy generator: ``steps`` refinements of image-shaped noise toward an image, guided by the condition."""

    sampling_flags = {"steps": "--sampling-steps"}

    def __init__(self, image_shape, conditioner, width: int = 8):
        super().__init__()
        self.conditioner = conditioner
        self.noise_shape = tuple(image_shape)
        self.net = nn.Conv2d(image_shape[0], image_shape[0], 3, padding=1)
        self.embed = nn.Linear(conditioner.dim, image_shape[0])

    def refine(self, x, condition):
        return torch.sigmoid(self.net(x) + self.embed(condition)[:, :, None, None])

    def forward(self, images, condition):
        noisy = images + 0.3 * torch.randn_like(images)
        return Denoised(self.refine(noisy, condition), images)

    @torch.no_grad()
    def sample(self, condition, noise=None, generator=None, *, steps: int = 2, guidance: float = 1.0,
               mode: Literal["plain", "sharp"] = "plain"):
        """Refine the noise ``steps`` times.

        :param steps: refinements, 1 to 8.
        :param guidance: how strongly the condition pulls, 0 or more.
        :param mode: plain or sharp.
        """
        x = noise
        for _ in range(steps):
            x = self.refine(x, condition * guidance)
        return (x > 0.5).float() if mode == "sharp" else x

    @staticmethod
    def check_sampling_options(steps, guidance, mode):
        if not 1 <= steps <= 8:
            raise genkit.UsageError(f"--sampling-steps {steps} is outside 1-8")
        if guidance < 0:
            raise genkit.UsageError(f"--guidance {guidance} must be 0 or more")


class DenoisingLoss:
    def __call__(self, output, images):
        mse = (output.prediction - output.target).pow(2).flatten(1).sum(1).mean()
        return genkit.LossResult(total=mse, terms={"mse": mse})


class FamilyPlugin:
    @genkit.hookimpl
    def register_models(self, register):
        def build(image_shape, conditioner, width: int = 8):
            """A toy refiner of image-shaped noise."""
            return NoisyRefiner(image_shape, conditioner, width)

        register("refiner", build, default_loss="denoising", train_defaults={"ema": 0.9, "lr": 0.01})

    @genkit.hookimpl
    def register_losses(self, register):
        register("denoising", lambda: DenoisingLoss())
        register("picky", lambda refuse="none": PickyLoss(refuse))


class PickyLoss(DenoisingLoss):
    """A loss that refuses some runs itself, the way a plugin checks what it is given."""

    def __init__(self, refuse: str = "none"):
        self.refuse = refuse

    def __call__(self, output, images):
        if self.refuse == "usage":
            raise genkit.UsageError("loss 'picky' needs images of at least 16x16; pass --image-size 16")
        if self.refuse == "value":
            raise ValueError(f"expected 16x16 images, got {images.shape[-2]}x{images.shape[-1]}")
        return super().__call__(output, images)


@pytest.fixture(scope="module")
def plugin():
    genkit.register_plugin(FamilyPlugin(), name="family-test")
    yield
    genkit.unregister_plugin("family-test")


@pytest.fixture(scope="module")
def refiner_run(plugin, tmp_path_factory):
    out = tmp_path_factory.mktemp("refiner") / "run"
    code, output = cli("train", "--model", "refiner", *TINY, "--out", str(out))
    assert code == 0, output
    return out


def test_the_model_declares_what_it_can_do_and_nothing_is_faked(plugin, refiner_run):
    run = genkit.load_run(refiner_run, device="cpu")
    assert run.capabilities == {"posterior": False, "invert": False, "partial_invert": False, "log_likelihood": False,
                                "partial_conditions": False}
    assert run.noise(2, seed=1).shape == (2, 3, 8, 8)
    options = run.sampling_options
    assert [(o.name, o.flag, o.default) for o in options.values()] == [
        ("steps", "--sampling-steps", 2), ("guidance", "--guidance", 1.0), ("mode", "--mode", "plain")]
    assert options["mode"].choices == ("plain", "sharp") and options["steps"].help == "refinements, 1 to 8."


def test_the_models_own_loss_and_training_defaults_are_used(refiner_run):
    config = json.loads((refiner_run / "config.json").read_text())
    assert config["loss"]["name"] == "denoising"
    assert config["train"]["ema"] == 0.9 and config["train"]["lr"] == 0.01 and config["train"]["batch_size"] == 16
    assert (refiner_run / "samples" / "epoch_001.png").is_file()


def test_sampling_options_reach_the_api_and_the_command_line(plugin, refiner_run, tmp_path):
    run = genkit.load_run(refiner_run, device="cpu")
    plain = run.sample("shape::circle", n=3, seed=4, rest="off")
    assert torch.equal(plain, run.sample("shape::circle", n=3, seed=4, rest="off", steps=2))
    sharp = run.sample("shape::circle", n=3, seed=4, rest="off", mode="sharp", steps=3)
    assert set(sharp.unique().tolist()) <= {0.0, 1.0} and not torch.equal(sharp, plain)
    expected = run.model.sample(run.condition("shape::circle", 3), run.noise(3, 4), steps=3, guidance=0.5)
    assert torch.equal(run.sample("shape::circle", n=3, seed=4, rest="off", steps=3, guidance=0.5), expected)
    code, output = cli("sample", "--run", str(refiner_run), "--attrs", "shape::circle", "--n", "3",
                       "--sampling-steps", "3", "--guidance=0.5", "--sample-opt", "mode=sharp",
                       "--out", str(tmp_path / "s.png"))
    assert code == 0 and (tmp_path / "s.png").is_file(), output
    help_text = cli("sample", "--run", str(refiner_run), "--help")[1]
    assert "--sampling-steps INTEGER refinements, 1 to 8." in help_text and "--mode plain|sharp" in help_text


@pytest.mark.parametrize("args, message", [
    (["--temperature", "0.5"], "--temperature is not an option of `genkit sample` nor a sampling option of model "
                               "'refiner' (its sampling options: --sampling-steps, --guidance, --mode)"),
    (["--sampling-steps", "0"], "--sampling-steps 0 is outside 1-8"),
    (["--sampling-steps", "2.5"], "--sampling-steps '2.5' must be a whole number"),
    (["--guidance", "-1"], "--guidance -1.0 must be 0 or more"),
    (["--guidance", "nan"], "--guidance nan must be a finite number"),
    (["--guidance", "inf"], "--guidance inf must be a finite number"),
    (["--mode", "blurry"], "--mode 'blurry' must be one of plain, sharp"),
    (["--sample-opt", "speed=3"], "'speed' is not a sampling option of model 'refiner'"),
])
def test_bad_sampling_options_are_one_line_exit_2_and_nothing_is_written(plugin, refiner_run, tmp_path, args,
                                                                        message):
    out = tmp_path / "never.png"
    result = invoke(["sample", "--run", refiner_run, "--out", out, *args])
    assert message in error_line(result)
    assert not out.exists()


def test_a_cvae_run_names_its_own_sampling_options(tiny_run):
    result = invoke(["sample", "--run", tiny_run, "--guidance", "2"])
    assert error_line(result) == ("error: --guidance is not an option of `genkit sample` nor a sampling option of "
                                  "model 'cvae' (its sampling options: --temperature)")


def test_evaluate_reports_the_likelihood_bounds_as_null_for_a_model_without_a_posterior(plugin, refiner_run):
    code, output = cli("evaluate", "--run", str(refiner_run), "--train-classifier", "--json", "--sampling-steps", "1")
    assert code == 0, output
    result = json.loads((refiner_run / "evaluation_test.json").read_text())
    for key in ("mse", "mse_per_pixel", "kl", "elbo", "cll", "cll_ge_elbo_fraction", "log_likelihood", "samples",
                "likelihood"):
        assert result[key] is None, key
    assert 0 <= result["attribute_accuracy"] <= 1 and result["diversity"] > 0 and result["fd"] is not None
    assert result["sampling_options"] == {"steps": 1, "guidance": 1.0, "mode": "plain"}
    assert result["capabilities"]["posterior"] is False
    assert "evaluating 16 test images" in output and "about" in output
    code, output = cli("reconstruct", "--run", str(refiner_run))
    assert code == 2 and "neither a posterior (encode/decode) nor an inverse of its sampler" in output


def test_a_sweep_over_a_sampling_option_evaluates_one_run_without_retraining(plugin, refiner_run, tmp_path):
    out = tmp_path / "sweep"
    code, output = cli("sweep", "--run", str(refiner_run), "--vary", "sample.steps=1,3", "--out", str(out))
    assert code == 0, output
    rows = json.loads((out / "sweep.json").read_text())
    assert [(r["steps"], r["sampling_options"]["steps"]) for r in rows] == [(1, 1), (3, 3)]
    assert rows[0]["attribute_accuracy"] != rows[1]["attribute_accuracy"] or rows[0]["fd"] != rows[1]["fd"]
    assert (refiner_run / "evaluation_test_steps-1.json").is_file()
    assert (refiner_run / "evaluation_test_steps-3.json").is_file()
    assert (out / "figure3.png").is_file() and (out / "samples_vs_steps.png").is_file()
    assert not (out / "figure4.png").exists()  # no posterior, no inverse: no reconstructions, nothing faked
    assert not [p for p in out.iterdir() if p.is_dir()]  # nothing trained


def test_a_training_sweep_trains_once_per_trained_point_and_evaluates_each_sampling_point(plugin, tmp_path):
    out = tmp_path / "sweep"
    code, output = cli("sweep", "--model", "refiner", *TINY, "--limit", "64", "--vary", "model.width=4",
                       "--vary", "sample.guidance=0,2", "--out", str(out))
    assert code == 0, output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["width-4"]
    rows = json.loads((out / "sweep.json").read_text())
    assert [(r["width"], r["guidance"]) for r in rows] == [(4, 0.0), (4, 2.0)]


@pytest.mark.parametrize("vary, message", [
    ("sample.temperature=1,2", "model 'refiner' has no sampling option 'temperature'; its sampling options are: "
                               "steps, guidance, mode"),
    ("sample.steps=1,9", "--sampling-steps 9 is outside 1-8"),
    ("sample.guidance=1,nan", "--guidance nan must be a finite number"),
    ("sample.steps=2,2", "value 2 is listed twice"),
])
def test_bad_sampling_sweeps_are_refused_before_anything_is_written(plugin, refiner_run, tmp_path, vary, message):
    out = tmp_path / "sweep"
    result = invoke(["sweep", "--run", refiner_run, "--vary", vary, "--out", out])
    assert message in error_line(result)
    assert not out.exists()


def test_with_run_only_sampling_options_may_vary(plugin, refiner_run, tmp_path):
    result = invoke(["sweep", "--run", refiner_run, "--vary", "train.lr=0.1,0.2", "--out", tmp_path / "s"])
    assert "--vary train.lr changes training, but --run evaluates a trained run" in error_line(result)


def test_a_loss_that_cannot_train_the_model_is_refused_at_planning(plugin, tmp_path):
    out = tmp_path / "run"
    result = invoke(["train", "--model", "cvae", "--loss", "denoising", *TINY, "--out", out])
    assert error_line(result) == ("error: loss 'denoising' cannot train model 'cvae': AttributeError: 'ModelOutput' "
                                  "object has no attribute 'prediction'; choose a loss written for this model (see "
                                  "`genkit plugins`)")
    assert not out.exists()
    result = invoke(["train", "--model", "refiner", "--loss", "gaussian-elbo", *TINY, "--out", out])
    assert ("loss 'gaussian-elbo' cannot train model 'refiner': AttributeError: 'Denoised' object has no attribute "
            "'reconstruction'; train it with --loss denoising (its own loss)") in error_line(result)
    assert not out.exists()


@pytest.mark.parametrize("refuse, line", [
    ("usage", "error: loss 'picky' needs images of at least 16x16; pass --image-size 16"),
    ("value", "error: loss 'picky' refused this run: expected 16x16 images, got 8x8"),
])
def test_a_components_own_refusal_in_the_trial_step_is_one_line_before_anything_is_written(plugin, tmp_path,
                                                                                          refuse, line):
    out = tmp_path / "run"
    result = invoke(["train", "--model", "refiner", "--loss", "picky", "--loss-opt", f"refuse={refuse}", *TINY,
                     "--out", out])
    assert error_line(result) == line
    assert not out.exists()


def test_a_served_page_draws_with_the_models_options(plugin, refiner_run):
    from genkit.serve.page import RunPage

    page = RunPage(genkit.load_run(refiner_run, device="cpu"), "refiner", {"steps": 3})
    view = page.grid("shape::circle", 4, 1, "off", {"guidance": 0.5, "steps": None})
    assert "--sampling-steps 3 --guidance 0.5" in view.command
    with pytest.raises(genkit.UsageError, match="--sampling-steps 20 is outside 1-8"):
        page.grid("shape::circle", 4, 1, "off", {"steps": 20})
    with pytest.raises(genkit.UsageError, match="--sampling-steps 0 is outside 1-8"):
        RunPage(genkit.load_run(refiner_run, device="cpu"), "refiner", {"steps": 0})


def test_a_legacy_model_with_only_latent_dim_still_samples():
    class Legacy(nn.Module):
        latent_dim = 3

        def sample(self, condition, z=None, generator=None):
            return z.sum(1)

    legacy = Legacy()
    assert capabilities.noise_shape(legacy) == (3,) and capabilities.sampling_options(legacy) == {}
    noise = capabilities.draw_noise(legacy, 2, torch.Generator().manual_seed(0))
    assert torch.equal(capabilities.sample(legacy, torch.zeros(2, 1), noise), noise.sum(1))


def test_registering_defaults_for_a_component_that_is_not_a_model_is_refused():
    class Bad:
        @genkit.hookimpl
        def register_losses(self, register):
            register("odd", lambda: None, default_loss="x")

        @genkit.hookimpl
        def register_models(self, register):
            register("odd-model", lambda image_shape, conditioner: None, train_defaults={"speed": 1})

    genkit.register_plugin(Bad(), name="bad-defaults")
    try:
        assert "odd" not in genkit.registry("losses") and "odd-model" not in genkit.registry("models")
        messages = " ".join(str(e) for e in genkit.plugin_errors())
        assert "only models declare" in messages and "'speed', which is not a training setting" in messages
    finally:
        genkit.unregister_plugin("bad-defaults")
