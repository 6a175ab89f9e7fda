"""The example third-party plugin in docs/examples installs, is listed, trains and samples.

It is built and installed with pip into a private ``--target`` folder put on ``PYTHONPATH``, not
into the shared environment: other test sessions keep seeing only their own plugins, and a crash
here cannot leave it installed. genkit then finds it exactly as it finds any installed
distribution: by its ``genkit`` entry point.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from conftest import env_with_path, run_genkit

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "genkit-deep-cvae"


def _pip_available() -> bool:
    probe = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True)
    return probe.returncode == 0


def _builds_without_isolation() -> bool:
    """Whether this environment's setuptools meets the example's ``setuptools>=77``.

    A fresh Python 3.11 venv has setuptools 65 and no ``wheel``; there pip builds in an isolated
    environment and fetches the build requirements from the package index instead.
    """
    try:
        return int(metadata.version("setuptools").split(".")[0]) >= 77
    except (metadata.PackageNotFoundError, ValueError):
        return False


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """The environment of a genkit that has genkit-deep-cvae installed."""
    if not _pip_available():
        pytest.skip(f"pip is not available to {sys.executable}, so the example plugin cannot be installed")
    work = tmp_path_factory.mktemp("example")
    # A copy: the build leaves build/ and *.egg-info beside the sources.
    source = shutil.copytree(EXAMPLE, work / "src", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = work / "site"
    isolation = ["--no-build-isolation"] if _builds_without_isolation() else []
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *isolation, "--no-deps",
                            "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    return env_with_path(target)


def genkit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return run_genkit(*args, env=env, timeout=300)


@pytest.mark.slow
def test_example_plugin_is_listed(installed):
    result = genkit(installed, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    [plugin] = [p for p in payload["plugins"] if p["name"] == "deep-cvae"]
    assert (plugin["distribution"], plugin["version"]) == ("genkit-deep-cvae", "0.1.0")
    assert plugin["components"] == {"losses": ["bernoulli-elbo"], "models": ["deep-cvae"]}
    assert payload["errors"] == []


@pytest.mark.slow
def test_example_plugin_trains_and_samples(installed, tmp_path):
    run = tmp_path / "run"
    result = genkit(installed, "train", "--model", "deep-cvae", "--loss", "bernoulli-elbo", "--data", "shapes",
                    "--data-opt", "count=64", "--image-size", "16", "--epochs", "1", "--batch-size", "16",
                    "--device", "cpu", "--out", str(run))
    assert result.returncode == 0, result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == {"name": "deep-cvae", "options": {"latent_dim": 64, "channels": [32, 64, 128]}}
    assert config["loss"] == {"name": "bernoulli-elbo", "options": {"beta": 1.0}}
    [record] = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(record[k]) for k in ("train_loss", "train_bce", "train_kl", "val_loss"))
    assert (run / "model.safetensors").stat().st_size > 0
    assert (run / "samples" / "epoch_001.png").is_file()

    # The run folder rebuilds through the installed plugin: sampling needs deep-cvae again.
    grid = tmp_path / "grid.png"
    result = genkit(installed, "sample", "--run", str(run), "--attrs", "shape::circle,color::red", "--n", "4",
                    "--device", "cpu", "--out", str(grid))
    assert result.returncode == 0, result.stderr
    assert grid.stat().st_size > 0


@pytest.mark.slow
def test_example_plugin_is_swept_over_its_own_option_and_plots_its_own_term(installed, tmp_path):
    from PIL import Image

    from genkit.store.images import loss_terms
    from genkit.store.run_folder import read_jsonl

    out = tmp_path / "sweep"
    result = genkit(installed, "sweep", "--model", "deep-cvae", "--loss", "bernoulli-elbo", "--data", "shapes",
                    "--data-opt", "count=64", "--image-size", "16", "--epochs", "1", "--batch-size", "16",
                    "--samples", "2", "--device", "cpu", "--beta", "0.5,1.0", "--vary", "model.latent_dim=4,8",
                    "--out", str(out))
    assert result.returncode == 0, result.stderr
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["beta-0.5_latent_dim-4", "beta-0.5_latent_dim-8", "beta-1_latent_dim-4",
                       "beta-1_latent_dim-8"]
    run = out / "beta-0.5_latent_dim-8"
    assert json.loads((run / "config.json").read_text())["model"]["options"]["latent_dim"] == 8
    assert loss_terms(read_jsonl(run / "metrics.jsonl"), read_jsonl(run / "steps.jsonl")) == ["loss", "bce", "kl",
                                                                                                  "mse"]
    with Image.open(run / "loss_curve.png") as curve:
        assert curve.size[0] >= 4 * 400  # a panel per term: loss, bce, kl, mse
    header = (out / "table.md").read_text().splitlines()[0]
    assert header.startswith("| beta | latent_dim | mse |") and "val_bce" in header
