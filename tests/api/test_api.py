"""The Python API a notebook uses, the config round trip, and the shapes dataset's promises."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import genkit
from conftest import error_line, invoke
from genkit.components.build import build_components
from genkit.config import CONFIG_FORMAT
from genkit_datasets.shapes import ATTRIBUTE_NAMES, shapes_index


def test_load_dataset_returns_float_images_and_attributes(tiny_shapes_options):
    data = genkit.load_dataset("shapes", split="valid", image_size=16, **tiny_shapes_options)
    image, attributes = data[0]
    assert image.dtype == torch.float32 and image.shape == (3, 16, 16)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert attributes.dtype == torch.float32 and set(attributes.tolist()) <= {0.0, 1.0}
    assert data.attribute_names == ATTRIBUTE_NAMES
    assert len(data) == 16


def test_image_i_is_paired_with_attribute_row_i(tiny_shapes_options):
    index = shapes_index(**tiny_shapes_options)
    data = genkit.load_dataset("shapes", split="train", image_size=16, **tiny_shapes_options)
    for i in (0, 5, 17):
        expected = index.reader(i, (16, 16)).transpose(2, 0, 1)
        image, attributes = data[i]
        assert np.array_equal((image * 255).round().to(torch.uint8).numpy(), expected)
        assert attributes.tolist() == index.attributes[i].tolist()


def test_shapes_is_deterministic_and_its_groups_are_exclusive():
    a, b = shapes_index(count=50, seed=1), shapes_index(count=50, seed=1)
    assert np.array_equal(a.attributes, b.attributes)
    assert np.array_equal(a.reader(7, (24, 32)), b.reader(7, (24, 32)))
    assert not np.array_equal(a.attributes, shapes_index(count=50, seed=2).attributes)
    shapes, colours = a.attributes[:, :4], a.attributes[:, 4:8]
    assert (shapes.sum(1) == 1).all() and (colours.sum(1) == 1).all()
    assert len(ATTRIBUTE_NAMES) >= 10
    # Unnamed variation: two images with the same attribute vector still differ.
    same = [i for i in range(50) if np.array_equal(a.attributes[i], a.attributes[0])]
    rows = [tuple(r) for r in a.attributes]
    pair = next((i, j) for i in range(50) for j in range(i + 1, 50) if rows[i] == rows[j])
    assert not np.array_equal(a.reader(pair[0], (32, 32)), a.reader(pair[1], (32, 32)))
    assert same[0] == 0


def test_config_round_trips_and_rebuilds_the_same_model():
    config = genkit.plan_run(data_options={"count": 40}, image_size=16, model_options={"latent_dim": 3})
    again = genkit.RunConfig.from_json(config.to_json())
    assert again == config
    torch.manual_seed(0)
    _, model_a, _ = build_components(config)
    torch.manual_seed(0)
    _, model_b, _ = build_components(again)
    for (name, pa), (_, pb) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert torch.equal(pa, pb), name


def test_a_config_from_a_newer_genkit_is_refused_in_one_line(tmp_path):
    config = genkit.plan_run(data_options={"count": 40}, image_size=16)
    raw = json.loads(config.to_json())
    older = {k: v for k, v in raw.items() if k != "format"}  # written before the field existed
    assert genkit.RunConfig.from_dict(older) == config
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({**raw, "format": CONFIG_FORMAT + 1, "new_field": 1}))
    expected = (f"{run / 'config.json'} was written by a newer genkit (format {CONFIG_FORMAT + 1}); "
                "upgrade genkit (pip install --upgrade genkit-cvae) to read it")
    with pytest.raises(genkit.UsageError) as caught:
        genkit.load_run(run)
    assert str(caught.value) == expected
    with pytest.raises(genkit.UsageError, match=r"^this config was written by a newer genkit \(format 2\)"):
        genkit.RunConfig.from_json(json.dumps({**raw, "format": 2}))
    assert error_line(invoke(["sample", "--run", str(run), "--attrs", "large"])) == f"error: {expected}"


def test_isinstance_checks_a_component_against_its_contract():
    """docs/api.md: the contracts are runtime-checkable protocols, so a plugin's tests can use isinstance."""
    config = genkit.plan_run(data_options={"count": 40}, image_size=16, model_options={"latent_dim": 3})
    conditioner, model, loss = build_components(config)
    source = genkit.registry("datasets").get("shapes").create(count=40)
    assert isinstance(conditioner, genkit.Conditioner) and isinstance(model, genkit.Model)
    assert isinstance(loss, genkit.Loss) and isinstance(source, genkit.DatasetSource)
    assert not isinstance(loss, genkit.Model) and not isinstance(object(), genkit.Conditioner)
