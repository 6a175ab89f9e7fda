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
