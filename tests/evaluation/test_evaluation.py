"""Evaluation: the likelihood bounds against an exact model, the attribute classifier and its cache,
`genkit evaluate` / `reconstruct` / `sample --vary --interpolate` end to end, and every bad input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import genkit
from genkit.evaluation.classifier import classifier_files, get_classifier, predict, attribute_accuracy, train_classifier
from conftest import error_line
from genkit.cli.app import build_app
from genkit.sampling import compare
from genkit.evaluation.likelihood import likelihood_bounds
from genkit.evaluation.metrics import pairwise_rms
from genkit_datasets.shapes import shapes_index

DATA = ["--data-opt", "count=160", "--data-opt", "seed=3"]
KEYS = {"mse", "mse_per_pixel", "kl", "elbo", "cll", "attribute_accuracy", "per_attribute_accuracy",
        "classifier_accuracy", "diversity", "diversity_ratio", "fd", "fd_floor", "min_attribute_accuracy",
        "weakest_attribute"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("eval-cache")


@pytest.fixture(scope="module")
def run(runner, cache, tmp_path_factory) -> Path:
    """A tiny trained run and the attribute classifier of its data, in the module's own cache."""
    out = tmp_path_factory.mktemp("eval-runs") / "tiny"
    result = runner.invoke(build_app(), ["train", *DATA, "--image-size", "16", "--epochs", "1", "--limit", "96",
                                         "--latent-dim", "4", "--batch-size", "16", "--cache-dir", str(cache),
                                         "--out", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(build_app(), ["classifier", "train", "--data", "shapes", *DATA, "--image-size", "16",
                                         "--epochs", "2", "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(".classifier-small-cnn.safetensors")
    assert "mean accuracy" in result.stderr
    return out


# --- the bounds, against a model whose log-likelihood is known exactly ----------------------

class LinearGaussian(torch.nn.Module):
    """z ~ N(0, I), y = W z + b + σ·noise, with W's columns orthogonal so the exact posterior is diagonal.

    ``encode`` returns that posterior, optionally shifted, as q(z|x, y); ``decode`` the mean W z + b.
    """

    def __init__(self, sigma: float, shift: float = 0.0):
        super().__init__()
        torch.manual_seed(0)
        basis, _ = torch.linalg.qr(torch.randn(12, 2))
        self.W = basis * torch.tensor([0.8, 0.3])
        self.b = torch.rand(12)
        self.sigma, self.shift, self.latent_dim = sigma, shift, 2

    def posterior(self, y):
        precision = 1 + (self.W ** 2).sum(0) / self.sigma ** 2            # diagonal of I + WᵀW/σ²
        mu = ((y.flatten(1) - self.b) @ self.W) / self.sigma ** 2 / precision
        return mu, (-precision.log()).expand_as(mu)

    def encode(self, images, condition):
        mu, logvar = self.posterior(images)
        return mu + self.shift, logvar

    def decode(self, z, condition):
        return (z @ self.W.T + self.b).reshape(-1, 3, 2, 2)

    def forward(self, images, condition):
        mu, logvar = self.encode(images, condition)
        return genkit.ModelOutput(reconstruction=images, mu=mu, logvar=logvar)

    def sample(self, condition, noise=None, generator=None):
        return self.decode(noise, condition)

    def log_marginal(self, y):
        cov = self.W @ self.W.T + self.sigma ** 2 * torch.eye(12)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(y.flatten(1))


def test_with_the_exact_posterior_cll_is_the_exact_log_likelihood():
    model = LinearGaussian(sigma=0.1)
    y = model.sample(None, torch.randn(5, 2)) + 0.1 * torch.randn(5, 3, 2, 2)
    bounds = likelihood_bounds(model, y, torch.zeros(5, 1), samples=7, sigma=0.1,
                               generator=torch.Generator().manual_seed(0))
    exact = model.log_marginal(y).double()
    assert torch.allclose(bounds["cll"], exact, atol=1e-3)   # every importance weight equals p(y)
    many = likelihood_bounds(model, y, torch.zeros(5, 1), samples=4000, sigma=0.1,
                             generator=torch.Generator().manual_seed(0))
    assert torch.allclose(many["elbo"], exact, atol=0.1)   # KL(q ‖ posterior) = 0, up to Monte-Carlo noise


def test_with_a_wrong_posterior_elbo_le_cll_le_log_likelihood_and_cll_tightens():
    model = LinearGaussian(sigma=0.1, shift=0.5)
    y = model.sample(None, torch.randn(64, 2)) + 0.1 * torch.randn(64, 3, 2, 2)
    exact = model.log_marginal(y).double().mean()
    gen = torch.Generator().manual_seed(0)
    few = likelihood_bounds(model, y, torch.zeros(64, 1), samples=2, sigma=0.1, generator=gen)
    many = likelihood_bounds(model, y, torch.zeros(64, 1), samples=500, sigma=0.1, generator=gen)
    assert (many["cll"] >= many["elbo"]).all()
    assert many["elbo"].mean() < few["cll"].mean() < many["cll"].mean() <= exact + 0.05
    # the elbo's decomposition: −E[SSE]/(2σ²) − D/2·log(2πσ²) − KL
    assert torch.allclose(many["elbo"], -many["mse"] / 0.02 - 6 * math.log(2 * math.pi * 0.01) - many["kl"])


def test_samples_and_sigma_must_be_positive():
    model = LinearGaussian(sigma=0.1)
    with pytest.raises(genkit.UsageError, match="--samples 0 must be a positive integer"):
        likelihood_bounds(model, torch.zeros(1, 3, 2, 2), torch.zeros(1, 1), samples=0)
    with pytest.raises(genkit.UsageError, match="--sigma -1.0 must be a positive number"):
        likelihood_bounds(model, torch.zeros(1, 3, 2, 2), torch.zeros(1, 1), sigma=-1.0)


def test_pairwise_distance_and_attribute_accuracy():
    images = torch.stack([torch.zeros(3, 4, 4), torch.full((3, 4, 4), 0.5), torch.full((3, 4, 4), 0.5)])
    assert float(pairwise_rms(images)) == pytest.approx((0.5 + 0.5 + 0) / 3)
    predictions = torch.tensor([[True, False], [True, True]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert attribute_accuracy(predictions, targets).tolist() == [0.5, 1.0]


# --- the attribute classifier ----------------------------------------------------------------

@pytest.mark.slow
def test_classifier_reaches_95_percent_on_real_shapes(tmp_path):
    # 32x32 keeps this test short; on the default 64x64 set of 12000 it reaches 0.999 (docs/evaluation.md)
    info, _ = genkit.prepare_dataset("shapes", image_size=32, options={"count": 6000, "seed": 1}, cache_dir=tmp_path)
    model, record = train_classifier(info, epochs=6, device="cpu")
    test = genkit.load_dataset("shapes", split="test", image_size=32, cache_dir=tmp_path, count=6000, seed=1)
    accuracy = attribute_accuracy(predict(model, test.images_uint8()), test.attributes)
    assert float(accuracy.mean()) >= 0.95 and record.accuracy >= 0.95, accuracy


def test_classifier_is_cached_by_fingerprint_and_a_stale_one_is_retrained(tmp_path):
    info, _ = genkit.prepare_dataset("shapes", image_size=8, options={"count": 40, "seed": 1}, cache_dir=tmp_path)
    _, first, trained = get_classifier(info, train_if_needed=True, device="cpu")
    assert trained and first.fingerprint == info.fingerprint
    weights, meta = classifier_files(info)
    assert weights.is_file() and json.loads(meta.read_text())["attribute_names"] == info.attribute_names
    _, _, trained = get_classifier(info, train_if_needed=True, device="cpu")
    assert not trained  # reused
    record = json.loads(meta.read_text())
    meta.write_text(json.dumps({**record, "fingerprint": "0" * 64}))
    with pytest.raises(genkit.UsageError, match="is stale: it was trained on another version of the data"):
        get_classifier(info, device="cpu")
    _, again, trained = get_classifier(info, train_if_needed=True, device="cpu")
    assert trained and again.fingerprint == info.fingerprint


# --- genkit evaluate ----------------------------------------------------------------------------

def test_evaluate_json_has_every_metric_and_cll_is_at_least_elbo(runner, run, cache):
    result = runner.invoke(build_app(), ["evaluate", "--run", str(run), "--json", "--samples", "20",
                                         "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert KEYS <= set(metrics)
    assert metrics["split"] == "test" and metrics["images"] == 16 and metrics["samples"] == 20
    assert metrics["cll"] >= metrics["elbo"] and metrics["cll_ge_elbo_fraction"] == 1.0
    assert metrics["mse_per_pixel"] == pytest.approx(metrics["mse"] / (3 * 16 * 16))
    assert set(metrics["per_attribute_accuracy"]) == set(genkit.load_run(run).attribute_names)
    assert 0 <= metrics["attribute_accuracy"] <= 1 and 0 <= metrics["classifier_accuracy"] <= 1
    assert metrics["diversity"] > 0
    if metrics["data_diversity"] is None:  # no two test images of this tiny set share a vector
        assert metrics["diversity_ratio"] is None
    else:
        assert metrics["diversity_ratio"] == pytest.approx(metrics["diversity"] / metrics["data_diversity"])
    per_attribute = metrics["per_attribute_accuracy"]
    assert metrics["min_attribute_accuracy"] == min(per_attribute.values())
    assert per_attribute[metrics["weakest_attribute"]] == metrics["min_attribute_accuracy"]
    assert metrics["fd"] > 0 and metrics["fd_floor"] >= 0 and metrics["fd_reference_split"] == "train"
    assert metrics["config"] == json.loads((run / "config.json").read_text())  # the full resolved config
    assert json.loads((run / "evaluation_test.json").read_text()) == metrics
    again = runner.invoke(build_app(), ["evaluate", "--run", str(run), "--json", "--samples", "20",
                                        "--cache-dir", str(cache)])
    assert json.loads(again.stdout)["cll"] == metrics["cll"]  # seeded
    table = runner.invoke(build_app(), ["evaluate", "--run", str(run), "--samples", "5", "--split", "valid",
                                        "--cache-dir", str(cache)])
    assert table.exit_code == 0 and "attribute accuracy of samples" in table.stdout
    for row in ("weakest attribute", "diversity ratio", "fd (classifier features", "fd floor (real train"):
        assert row in table.stdout, row


def test_evaluate_says_first_what_it_will_do_edits_included(runner, run, cache):
    result = runner.invoke(build_app(), ["evaluate", "--run", str(run), "--json", "--samples", "3", "--cache-dir",
                                         str(cache)])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stderr.splitlines() if line.startswith("evaluating "))
    # 16 test images; 16 + 32 x 8 diversity + 1024 conformity samples; 3 x 16 decodes; 16 images x 10 changes
    assert line.startswith("evaluating 16 test images: 1,296 samples (")
    assert "48 decodes for the likelihood bounds and 160 edits of 16 images (--no-edits skips them), about " in line
    skipped = runner.invoke(build_app(), ["evaluate", "--run", str(run), "--json", "--samples", "3", "--no-edits",
                                          "--cache-dir", str(cache)])
    assert "edits" not in next(line for line in skipped.stderr.splitlines() if line.startswith("evaluating "))


def test_the_edit_metrics_are_made_in_the_mode_asked_and_record_it(runner, run, cache):
    from genkit.evaluation.edits import MAX_PSNR

    figures = {}
    for mode in ("residual", "redraw"):
        result = runner.invoke(build_app(), ["evaluate", "--run", str(run), "--json", "--samples", "2", "--limit", "8",
                                             "--edit-mode", mode, "--cache-dir", str(cache)])
        assert result.exit_code == 0, result.output
        figures[mode] = json.loads(result.stdout)
        setup = figures[mode]["edit_setup"]
        assert (setup["mode"], setup["depth"], setup["invert_options"]) == (mode, 1.0, None)
        assert f"| edit mode | {mode}, depth 1 |" in " ".join(runner.invoke(build_app(), [
            "evaluate", "--run", str(run), "--samples", "2", "--limit", "8", "--edit-mode", mode, "--cache-dir",
            str(cache)]).stdout.replace("│", "|").split())
    residual, redraw = figures["residual"], figures["redraw"]
    for m in figures.values():  # clean: the edits that do what was asked and nothing else
        assert m["edit_success"] + m["edit_preservation"] - 1 <= m["edit_clean"] <= min(m["edit_success"],
                                                                                        m["edit_preservation"])
    # the edit that changes nothing: the image itself under residual, the model's drawing under redraw
    assert residual["edit_psnr"] == MAX_PSNR and redraw["edit_psnr"] == redraw["edit_setup"]["reconstruction_psnr"]
    assert residual["edit_setup"]["reconstruction_psnr"] == redraw["edit_setup"]["reconstruction_psnr"] < 40
    assert residual["edit_cycle_psnr"] > redraw["edit_cycle_psnr"]  # the model's error cancels both ways
    assert residual["attribute_accuracy"] == redraw["attribute_accuracy"]  # only the edits change


@pytest.mark.parametrize("args, message", [
    (["--edit-mode", "sideways"], "--edit-mode 'sideways' is not known; choose residual"),
    (["--edit-depth", "2"], "--edit-depth 2 must be a number in (0, 1]"),
    (["--edit-depth", "0.5"], "(the capability partial_invert: invert_partway and sample_partway); model 'cvae' "
                              "lacks it: leave out --edit-depth"),
    (["--edit-depth", "0.5", "--no-edits"], "model 'cvae' lacks it"),
    (["--invert-opt", "temperature=0.5"], "--invert-opt sets sampling options of the inversion, and model 'cvae' "
                                          "inverts no sampler"),
    (["--invert-opt", "=1"], "--invert-opt '=1' is not KEY=VALUE"),
])
def test_edit_settings_evaluate_cannot_use_are_refused_before_any_work(runner, run, cache, args, message):
    report = run / "evaluation_test.json"
    before = report.stat().st_mtime_ns if report.exists() else None
    line = error_line(runner.invoke(build_app(), ["evaluate", "--run", str(run), *args, "--cache-dir", str(cache)]))
    assert message in line  # the only line: not even the estimate came first
    assert (report.stat().st_mtime_ns if report.exists() else None) == before


def test_evaluate_without_a_classifier_says_how_to_get_one(runner, run, tmp_path):
    line = error_line(runner.invoke(build_app(), ["evaluate", "--run", str(run), "--cache-dir", str(tmp_path)]))
    assert "no attribute classifier 'small-cnn' for shapes 16x16 yet; pass --train-classifier or run " \
           "`genkit classifier train --data shapes --image-size 16x16 --data-opt count=160 --data-opt seed=3 " \
           f"--cache-dir {tmp_path}`" in line  # the advice names the cache folder the command was given
    assert not list(tmp_path.glob("*.classifier-*"))
    result = runner.invoke(build_app(), ["evaluate", "--run", str(run), "--cache-dir", str(tmp_path), "--samples", "2",
                                         "--train-classifier", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["classifier"]["trained_now"] is True


def test_evaluate_with_a_stale_classifier_is_refused(runner, run, cache, tmp_path):
    for path in cache.glob("*.h5"):
        shutil.copy(path, tmp_path / path.name)
    for path in cache.glob("*.classifier-*"):
        shutil.copy(path, tmp_path / path.name)
    [meta] = tmp_path.glob("*.classifier-small-cnn.json")
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "attribute_names": ["x"] * 12}))
    line = error_line(runner.invoke(build_app(), ["evaluate", "--run", str(run), "--cache-dir", str(tmp_path)]))
    assert "attribute classifier 'small-cnn' for shapes 16x16 is stale: it was trained on another attribute set" in line


def test_evaluate_a_run_on_another_dataset_or_attribute_set_is_refused(runner, run, cache, tmp_path):
    line = error_line(runner.invoke(build_app(), ["evaluate", "--run", str(run), "--data", "celeba"]))
    assert "was trained on 'shapes', not 'celeba'" in line
    renamed = tmp_path / "renamed"
    shutil.copytree(run, renamed)
    config = json.loads((renamed / "config.json").read_text())
    config["data"]["attribute_names"][-1] = "bordered"
    (renamed / "config.json").write_text(json.dumps(config))
    line = error_line(runner.invoke(build_app(), ["evaluate", "--run", str(renamed), "--cache-dir", str(cache)]))
    assert "train_attributes.safetensors does not match the run's attribute names; delete it" in line  # on load
    (renamed / "train_attributes.safetensors").unlink()
    line = error_line(runner.invoke(build_app(), ["evaluate", "--run", str(renamed), "--cache-dir", str(cache)]))
    assert "was trained on 12 attributes of shapes but this shapes data has 12 (it lacks 'bordered')" in line


def test_evaluate_an_unknown_or_empty_split_is_refused(runner, run, cache, tmp_path):
    line = error_line(runner.invoke(build_app(), ["evaluate", "--run", str(run), "--split", "holdout",
                                                   "--cache-dir", str(cache)]))
    assert "split 'holdout' does not exist in shapes; choose one of test, train, valid" in line

    class EmptyTest:
        name, description, default_image_size, needs_root, obtain_hint = "no-test", "", (8, 8), False, ""
        attribute_names = shapes_index(10).attribute_names

        def scan(self, root=None):
            index = shapes_index(40, seed=5)
            index.splits = {"train": np.arange(30), "valid": np.arange(30, 40), "test": np.arange(0)}
            return index

    class Plugin:
        @genkit.hookimpl
        def register_datasets(register):
            register("no-test", EmptyTest)

    genkit.register_plugin(Plugin, name="empty-test-split")
    try:
        config = genkit.plan_run(data="no-test", image_size=8, epochs=1, batch_size=16, device="cpu",
                                 model_options={"latent_dim": 2, "channels": [4, 4]})
        genkit.train(config, out_dir=tmp_path / "run", cache_dir=tmp_path)
        line = error_line(runner.invoke(build_app(), ["evaluate", "--run", str(tmp_path / "run"),
                                                       "--cache-dir", str(tmp_path)]))
        assert "split 'test' of no-test is empty" in line
    finally:
        genkit.unregister_plugin("empty-test-split")


# --- figures: reconstruct, sample --vary, sample --interpolate ---------------------------------

def test_reconstruct_writes_truth_above_reconstruction(runner, run, cache, tmp_path):
    target = tmp_path / "rec.png"
    result = runner.invoke(build_app(), ["reconstruct", "--run", str(run), "--n", "5", "--out", str(target),
                                         "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    with Image.open(target) as image:
        assert image.size == (5 * 18 + 2, 2 * 18 + 2)  # 5 columns, 2 rows of 16-pixel images
        pixels = np.asarray(image.convert("RGB"))
    test = genkit.load_dataset("shapes", split="test", image_size=16, cache_dir=cache, count=160, seed=3)
    first = test.images_uint8()[0].permute(1, 2, 0).numpy()
    assert np.array_equal(pixels[2:18, 2:18], first)  # the top-left tile is the first test image


def test_vary_and_interpolate_keep_the_latent_codes_fixed(runner, run, tmp_path):
    loaded = genkit.load_run(run, device="cpu")
    grid = compare.vary(loaded, "shape::circle,color::red", ["large"], n=3, seed=5, rest="off").images
    assert torch.allclose(grid[:3], loaded.sample("shape::circle,color::red", n=3, seed=5, rest="off"))
    assert torch.allclose(grid[3:], loaded.sample("shape::circle,color::red,large", n=3, seed=5, rest="off"))
    lerp = compare.interpolate(loaded, ("shape::circle", "shape::square,large"), n=2, steps=4, seed=1,
                                rest="off").images
    assert lerp.shape == (8, 3, 16, 16)
    assert torch.allclose(lerp[0], loaded.sample("shape::circle", n=2, seed=1, rest="off")[0])
    assert torch.allclose(lerp[7], loaded.sample("shape::square,large", n=2, seed=1, rest="off")[1])
    # with the rest from the data, the rows differ only in the varied attribute, column by column
    varied = compare.vary(loaded, "shape::circle", ["large"], n=3, seed=5, rest="data")
    off_sets, on_sets = varied.attribute_sets[:3], varied.attribute_sets[3:]
    assert all("large" in on and set(on) - {"large"} == set(off) for off, on in zip(off_sets, on_sets))
    assert all("shape::circle" in on for on in on_sets)

    target = tmp_path / "vary.png"
    result = runner.invoke(build_app(), ["sample", "--run", str(run), "--attrs", "shape::circle", "--vary", "large",
                                         "--vary", "outline", "--n", "4", "--out", str(target)])
    assert result.exit_code == 0, result.output
    with Image.open(target) as image:
        assert image.size == (4 * 18 + 2, 4 * 18 + 2)  # two rows per varied attribute
    target = tmp_path / "lerp.png"
    result = runner.invoke(build_app(), ["sample", "--run", str(run), "--interpolate", "shape::circle,color::red",
                                         "color::blue,large", "--n", "2", "--steps", "6", "--out", str(target)])
    assert result.exit_code == 0, result.output
    with Image.open(target) as image:
        assert image.size == (6 * 18 + 2, 2 * 18 + 2)
    line = error_line(runner.invoke(build_app(), ["sample", "--run", str(run), "--vary", "large",
                                                   "--interpolate", "top", "left"]))
    assert "--vary and --interpolate make different grids; use one of them" in line
    line = error_line(runner.invoke(build_app(), ["sample", "--run", str(run), "--vary", "larg"]))
    assert "unknown attribute 'larg'" in line


# --- the real datasets' formats (CelebA and CUB fixtures) ------------------------------------

@pytest.mark.parametrize("dataset", ["celeba", "cub"])
def test_evaluate_on_the_celeba_and_cub_fixtures(runner, dataset, tmp_path):
    from fixtures_real_formats import write_celeba, write_cub

    fixture = (write_celeba(tmp_path / "data", counts=(16, 4, 4)) if dataset == "celeba"
               else write_cub(tmp_path / "data", n_classes=3, per_class=6))
    out, cache = tmp_path / "run", tmp_path / "cache"
    result = runner.invoke(build_app(), ["train", "--data", dataset, "--root", str(fixture.root), "--image-size", "16",
                                         "--epochs", "1", "--latent-dim", "4", "--cache-dir", str(cache),
                                         "--out", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(build_app(), ["evaluate", "--run", str(out), "--samples", "3", "--train-classifier",
                                         "--cache-dir", str(cache), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert KEYS <= set(metrics) and metrics["dataset"] == dataset and metrics["cll"] >= metrics["elbo"]
    assert len(metrics["per_attribute_accuracy"]) == len(genkit.load_run(out).attribute_names)
