"""A `valid` split is optional: a third-party dataset with only train and test trains, evaluates and
gets its attribute classifier, validating on `test` (docs/hooks.md, register_datasets)."""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import genkit
from genkit.cli.app import build_app

PLUGIN = "test_splits_plugin"


class TwoToneReader:
    """Image i: a flat colour, brighter when ``bright`` is on, red-tinted when ``red`` is on."""

    def __init__(self, attributes: np.ndarray):
        self.attributes = attributes

    def __call__(self, i: int, size: tuple[int, int]) -> np.ndarray:
        bright, red = (int(v) for v in self.attributes[i])
        level = 60 + 140 * bright + (i % 7)
        return np.full((*size, 3), (min(255, level + 50 * red), level, level), dtype=np.uint8)


class TwoSplitSource:
    name = "two-splits"
    description = "Flat two-tone images with only train and test splits"
    default_image_size = (8, 8)
    needs_root = False
    obtain_hint = ""
    attribute_names = ["bright", "red"]

    def __init__(self, count: int = 96, empty_valid: bool = False):
        self.count = count
        self.empty_valid = empty_valid

    def scan(self, root: Path | None) -> genkit.SourceIndex:
        ids = np.arange(self.count)
        attributes = np.stack([ids % 2, (ids // 2) % 2], axis=1).astype(np.uint8)
        splits = {"train": ids[ids % 4 != 3], "test": ids[ids % 4 == 3]}
        if self.empty_valid:
            splits["valid"] = ids[:0]
        return genkit.SourceIndex(attribute_names=list(self.attribute_names), attributes=attributes, splits=splits,
                                  reader=TwoToneReader(attributes),
                                  fingerprint=hashlib.sha256(f"two-splits:{self.count}".encode()).hexdigest())


def build(count: int = 96, empty_valid: bool = False) -> TwoSplitSource:
    """Flat two-tone images, splits train and test only."""
    return TwoSplitSource(count, empty_valid)


@pytest.fixture(scope="module")
def plugin():
    module = types.ModuleType(PLUGIN)
    module.TwoToneReader = TwoToneReader  # picklable by reference for the cache's workers
    TwoToneReader.__module__ = PLUGIN
    sys.modules[PLUGIN] = module
    module.register_datasets = genkit.hookimpl(lambda register: register("two-splits", build))
    assert genkit.register_plugin(module, name=PLUGIN) == PLUGIN, genkit.plugin_errors()
    yield
    genkit.unregister_plugin(PLUGIN)
    sys.modules.pop(PLUGIN, None)


@pytest.mark.parametrize("empty_valid", [False, True], ids=["no-valid", "empty-valid"])
def test_a_dataset_without_valid_trains_evaluates_and_gets_a_classifier(plugin, tmp_path, empty_valid):
    cli, cache, run = CliRunner(), tmp_path / "cache", tmp_path / "run"
    data = ["--data", "two-splits", "--data-opt", f"empty_valid={'true' if empty_valid else 'false'}"]
    result = cli.invoke(build_app(), ["train", *data, "--epochs", "2", "--batch-size", "16", "--latent-dim", "2",
                                      "--device", "cpu", "--cache-dir", str(cache), "--out", str(run)])
    assert result.exit_code == 0, result.output
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validated = [record for record in epochs if "val_loss" in record]
    assert len(validated) == 2 and all(np.isfinite(r["val_loss"]) for r in validated)

    result = cli.invoke(build_app(), ["classifier", "train", *data, "--epochs", "1", "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    assert "on the test split" in result.stderr
    (h5,) = cache.glob("*.h5")  # docs/evaluation.md: named after the cache file, without its .h5
    weights = Path(result.stdout.strip())
    assert weights == h5.with_name(f"{h5.stem}.classifier-small-cnn.safetensors") and weights.is_file()
    assert json.loads(weights.with_suffix(".json").read_text())["valid_split"] == "test"

    result = cli.invoke(build_app(), ["evaluate", "--run", str(run), "--samples", "2", "--json",
                                      "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["split"] == "test" and 0.0 <= metrics["attribute_accuracy"] <= 1.0
    assert 0.0 <= metrics["classifier"]["valid_accuracy"] <= 1.0
    assert "valid" not in genkit.load_dataset("two-splits", cache_dir=cache, empty_valid=empty_valid).info.split_sizes
