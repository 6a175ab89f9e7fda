"""Shared fixtures. Every test session gets its own cache directory, never the user's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("genkit-cache")
    os.environ["GENKIT_CACHE"] = str(path)
    os.environ.pop("GENKIT_DATA_ROOT", None)
    return path


@pytest.fixture(scope="session")
def tiny_shapes_options() -> dict:
    """A small shapes set: enough for every split, fast to build."""
    return {"count": 160, "seed": 3}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, _isolated_cache) -> Path:
    """A run trained for one epoch on 320 shapes images at 16x16: enough to sample from, in seconds."""
    import genkit

    out = tmp_path_factory.mktemp("tiny-run") / "shapes16"
    config = genkit.plan_run("cvae", "shapes", data_options={"count": 320, "seed": 5}, image_size=16,
                             model_options={"latent_dim": 4}, epochs=1, batch_size=32, device="cpu")
    genkit.train(config, out_dir=out)
    return out
