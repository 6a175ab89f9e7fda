"""Sampling by attribute names: exclusive groups, the rest from the data, off or left to the model, temperature."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import genkit
from genkit.sampling import attributes
from conftest import error_line, invoke
from genkit.cli.app import build_app
from genkit.config import RunConfig
from genkit_datasets.source import SourceIndex


@pytest.fixture(scope="module")
def run(tiny_run):
    return genkit.load_run(tiny_run, device="cpu")


@pytest.fixture(scope="module")
def train_vectors(run) -> set[tuple[int, ...]]:
    data = genkit.load_dataset("shapes", split="train", image_size=16, count=320, seed=5)
    return {tuple(int(v) for v in row) for row in data.attributes.tolist()}


def _one_line_exit_2(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output


# --- exclusive groups ------------------------------------------------------------------------

def test_exclusive_groups_travel_from_the_dataset_to_the_cache_and_the_run(run, tiny_run):
    info, _ = genkit.prepare_dataset("shapes", image_size=16, options={"count": 320, "seed": 5})
    assert info.exclusive_groups == ["shape", "color"]
    assert json.loads((tiny_run / "config.json").read_text())["data"]["exclusive_groups"] == ["shape", "color"]
    assert run.exclusive_groups == ["shape", "color"]


def test_a_config_without_exclusive_groups_still_loads(tiny_run):
    raw = json.loads((tiny_run / "config.json").read_text())
    del raw["data"]["exclusive_groups"]
    assert RunConfig.from_dict(raw).data.exclusive_groups == []


def test_source_index_refuses_an_exclusive_group_without_values():
    with pytest.raises(ValueError, match="exclusive group 'species' has no attribute named 'species::<value>'"):
        SourceIndex(attribute_names=["shape::circle", "large"], attributes=np.zeros((2, 2)), splits={},
                    reader=None, fingerprint="x", exclusive_groups=["species"])


def test_two_values_of_an_exclusive_group_are_refused(run, tiny_run):
    with pytest.raises(genkit.UsageError, match="'shape::circle' and 'shape::square' are both values of 'shape'"):
        run.condition("shape::circle,large,shape::square")
    with pytest.raises(genkit.UsageError, match="both values of 'color'"):
        run.sample("color::red,color::blue", n=1)
    run.condition("shape::circle,-shape::square,color::red")  # one on, others off: fine
    result = CliRunner().invoke(build_app(), ["sample", "--run", str(tiny_run), "--attrs",
                                              "shape::circle,shape::square", "--out", "never-written.png"])
    _one_line_exit_2(result, "'shape::circle' and 'shape::square'", "'shape'")
    assert not Path("never-written.png").exists()


def test_non_exclusive_families_may_hold_several_values():
    request = attributes.parse_attrs("has_wing_color::blue,has_wing_color::red,species::a",
                                   ["has_wing_color::blue", "has_wing_color::red", "species::a", "species::b"],
                                   exclusive_groups=["species"])
    assert request.on == ("has_wing_color::blue", "has_wing_color::red", "species::a")
    with pytest.raises(genkit.UsageError, match="'species::a' and 'species::b' are both values of 'species'"):
        attributes.parse_attrs("species::a,species::b", ["species::a", "species::b"], ["species"])


# --- the rest --------------------------------------------------------------------------------

def test_rest_off_reproduces_the_old_vectors_and_images_exactly(run):
    spec = "shape::circle,-large,color::red"
    cond = run.conditions(spec, n=5, seed=3, rest="off")
    assert torch.equal(cond.condition, run.conditioner.encode(spec).reshape(1, -1).expand(5, -1))
    old = run.model.sample(run.condition(spec, 5), run.latents(5, 3))
    assert torch.equal(run.sample(spec, n=5, seed=3, rest="off"), old)


@pytest.mark.parametrize("spec", ["", "large", "shape::triangle", "color::green,-outline", "-shape::circle,top"])
def test_rest_data_draws_only_training_vectors_that_agree(run, train_vectors, spec):
    result = run.draw(spec, n=24, seed=11, rest="data")
    assert result.note is None
    request = attributes.parse_attrs(spec, run.attribute_names)
    names = run.attribute_names
    cond = run.conditions(spec, n=24, seed=11, rest="data").condition
    for row, attribute_set in zip(cond, result.attribute_sets):
        vector = tuple(int(v) for v in row.tolist())
        assert vector in train_vectors
        assert set(request.on) <= set(attribute_set) and not set(request.off) & set(attribute_set)
        assert attribute_set == [n for n, v in zip(names, vector) if v]
        # shapes: exactly one shape and one colour, which rest="off" would not give
        assert sum(n.startswith("shape::") for n in attribute_set) == 1
        assert sum(n.startswith("color::") for n in attribute_set) == 1


def test_rest_data_is_reproducible_by_seed_and_varies_with_it(run):
    a = run.draw("large", n=16, seed=4)
    b = run.draw("large", n=16, seed=4)
    c = run.draw("large", n=16, seed=5)
    assert torch.equal(a.images, b.images) and a.attribute_sets == b.attribute_sets
    assert a.attribute_sets != c.attribute_sets
    assert len({tuple(s) for s in a.attribute_sets}) > 1  # each sample its own draw


def _absent_combination(run, train_vectors) -> str:
    names = run.attribute_names
    for shape in range(4):
        for color in range(4, 8):
            for flags in range(16):
                vector = [0] * 12
                vector[shape] = vector[color] = 1
                for k in range(4):
                    vector[8 + k] = (flags >> k) & 1
                if tuple(vector) not in train_vectors:
                    return ",".join(n if v else f"-{n}" for n, v in zip(names, vector) if v or n in names[8:])
    raise AssertionError("every combination occurs")


def test_no_agreeing_training_vector_falls_back_to_off_and_says_so(run, tiny_run, train_vectors, tmp_path):
    spec = _absent_combination(run, train_vectors)
    result = run.draw(spec, n=3, seed=0, rest="data")
    assert result.note and "no training image has" in result.note and "off" in result.note
    assert torch.equal(result.images, run.sample(spec, n=3, seed=0, rest="off"))
    with pytest.warns(UserWarning, match="no training image has"):
        run.sample(spec, n=3, seed=0)
    cli = CliRunner().invoke(build_app(), ["sample", "--run", str(tiny_run), "--attrs", spec, "--n", "3",
                                           "--out", str(tmp_path / "x.png")])
    assert cli.exit_code == 0, cli.output
    assert any(line.startswith("warning: no training image has") for line in cli.stderr.splitlines())


def test_the_training_vectors_are_written_into_the_run_folder(run, tiny_run):
    table = attributes.AttributeTable.load(tiny_run, run.attribute_names)
    data = genkit.load_dataset("shapes", split="train", image_size=16, count=320, seed=5)
    assert int(table.counts.sum()) == len(data)
    assert len({tuple(v) for v in table.vectors.tolist()}) == len(table.vectors)


def test_a_run_without_the_file_uses_the_cache_else_turns_the_rest_off(tiny_run, tmp_path, monkeypatch):
    copy = tmp_path / "old-run"
    shutil.copytree(tiny_run, copy)
    (copy / attributes.ATTRIBUTES_FILE).unlink()
    from_file = genkit.load_run(tiny_run, device="cpu").draw("large", n=8, seed=2)
    from_cache = genkit.load_run(copy, device="cpu").draw("large", n=8, seed=2)
    assert from_cache.note is None and from_cache.attribute_sets == from_file.attribute_sets
    monkeypatch.setenv("GENKIT_CACHE", str(tmp_path / "empty-cache"))
    without = genkit.load_run(copy, device="cpu").draw("large", n=8, seed=2)
    assert without.note and attributes.ATTRIBUTES_FILE in without.note and "off" in without.note
    assert all(s == ["large"] for s in without.attribute_sets)


# --- temperature and n -----------------------------------------------------------------------

def test_temperature_scales_the_prior_noise_and_n_is_respected(run):
    spec = "shape::square,color::blue"
    for n, t in ((1, 0.5), (7, 1.0), (3, 2.0)):
        images = run.sample(spec, n=n, seed=9, temperature=t, rest="off")
        assert images.shape == (n, 3, 16, 16)
        expected = run.model.sample(run.condition(spec, n), run.latents(n, 9) * t)
        assert torch.equal(images, expected)
    assert not torch.equal(run.sample(spec, n=4, temperature=0.5), run.sample(spec, n=4, temperature=1.5))


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, 1e308])
def test_a_bad_temperature_is_refused(run, tiny_run, bad):
    # temperature is the cvae's own sampling option: its range check, and genkit's refusal of non-finite numbers
    allowed = r"(is outside \(0, 100\]|must be a finite number)"
    with pytest.raises(genkit.UsageError, match=f"--temperature .* {allowed}"):
        run.sample("large", n=1, temperature=bad)
    result = CliRunner().invoke(build_app(), ["sample", "--run", str(tiny_run), "--temperature", str(bad)])
    _one_line_exit_2(result, "--temperature")
    assert re.search(allowed, result.stderr)


def test_a_bad_rest_mode_is_refused(run, tiny_run):
    with pytest.raises(genkit.UsageError, match="rest 'some' is not known"):
        run.sample("large", n=1, rest="some")
    result = CliRunner().invoke(build_app(), ["sample", "--run", str(tiny_run), "--rest", "some"])
    _one_line_exit_2(result, "--rest 'some' is not known; choose data", "off", "or model")


def test_a_model_trained_on_full_conditions_refuses_the_rest_left_to_it_in_one_line(run, tiny_run, tmp_path):
    assert run.rest_modes == ("data", "off") and not run.capabilities["partial_conditions"]
    message = ("rest model needs a model trained with attributes left unspecified (attribute dropout); this run's "
               "model 'cvae' was not: use rest data or rest off")
    for call in (lambda: run.sample("large", n=1, rest="model"), lambda: run.conditions("large", 1, rest="model"),
                 lambda: run.check_rest("model")):
        with pytest.raises(genkit.UsageError) as caught:
            call()
        assert str(caught.value) == message
    for extra in ([], ["--vary", "large"], ["--interpolate", "large", "top"]):
        out = tmp_path / "never.png"
        line = error_line(invoke(["sample", "--run", tiny_run, "--rest", "model", *extra, "--out", out]))
        assert line == ("error: --rest model needs a model trained with attributes left unspecified (attribute "
                        "dropout); this run's model 'cvae' was not: use --rest data or --rest off")
        assert not out.exists()


def test_the_rest_left_to_the_model_states_an_exclusive_family_named_and_leaves_the_others_unspecified(run):
    names = run.attribute_names
    request = attributes.parse_attrs("color::blue,-large", names, run.exclusive_groups)
    assert attributes.stated(request, names, run.exclusive_groups) == attributes.AttributeRequest(
        on=("color::blue",), off=("large", "color::red", "color::green", "color::yellow"))
    assert attributes.stated(request, names, []) == request  # exclusivity is the dataset's declaration only
    # a new run's conditioner encodes it (the cvae cannot use it: Run.conditions refuses; this does not know the model)
    cond = attributes.conditions(run.conditioner, names, run.exclusive_groups, "color::blue,-large", 3, rest="model")
    expected = [1 if n == "color::blue" else 0 if n.startswith("color::") or n == "large" else -1 for n in names]
    assert cond.condition.shape == (3, len(names)) and cond.condition[2].tolist() == expected
    assert cond.rest == "model" and cond.attribute_sets == [["color::blue"]] * 3 and cond.note is None

    class FullOnly:
        def encode(self, spec):
            return run.conditioner.encode(spec)

    with pytest.raises(genkit.UsageError, match="rest model needs a conditioner that can leave attributes "
                                                "unspecified; FullOnly cannot: use rest data or rest off"):
        attributes.conditions(FullOnly(), names, run.exclusive_groups, "large", 1, rest="model")


@pytest.mark.parametrize("vary, message", [
    (["-large"], "--vary takes one attribute name, not '-large'"),
    ([""], "--vary takes one attribute name, not ''"),
    (["large", "large"], "--vary 'large' is given twice"),
    (["color::red"], "are both values of 'color'"),
])
@pytest.mark.parametrize("rest", ["data", "off"])
def test_bad_vary_names_are_one_line_in_both_rest_modes(tiny_run, tmp_path, vary, message, rest):
    args = ["sample", "--run", str(tiny_run), "--attrs", "shape::circle,color::blue", "--n", "2", "--rest", rest,
            "--out", str(tmp_path / "v.png")]
    for name in vary:
        args += ["--vary", name]
    line = error_line(invoke(args))
    assert message in line
    assert not (tmp_path / "v.png").exists()


def test_an_attribute_item_naming_nothing_says_what_was_typed(tiny_run, tmp_path):
    line = error_line(invoke(["sample", "--run", str(tiny_run), "--attrs", "large,-", "--out", str(tmp_path / "x.png")]))
    assert "'-' names no attribute clearly; write NAME to switch one on and -NAME to switch it off" in line


# --- Run.sample with a batch of conditions ------------------------------------------------------

def test_a_batch_of_conditions_gives_one_sample_each_the_same_as_one_condition_at_a_time(run):
    specs = ["shape::circle,color::red", "shape::square,large", "shape::cross,color::blue,top"]
    rows = torch.cat([run.condition(spec) for spec in specs])  # (3, A)
    images = run.sample(rows, seed=4)
    assert images.shape == (3, 3, 16, 16)
    noise = run.noise(3, 4)  # the rows as they are, at the seed's noise
    assert torch.equal(images, run.images(rows, noise, run.resolve_options(), 4))
    assert torch.equal(run.sample(rows.numpy(), seed=4), images)  # an array is taken as a tensor
    twice = run.sample(rows, n=2, seed=4)  # n each, row by row
    assert twice.shape == (6, 3, 16, 16)
    assert torch.equal(twice, run.images(rows.repeat_interleave(2, 0), run.noise(6, 4), run.resolve_options(), 4))
    assert run.sample(rows[0]).shape == (16, 3, 16, 16)  # one vector: 16 samples, as before
    assert run.sample(specs[0]).shape == (16, 3, 16, 16)  # names: 16 by default


@pytest.mark.parametrize("bad, shape", [
    (torch.zeros(2, 5), "(2, 5)"),  # the wrong number of attributes
    (torch.zeros(2, 3, 12), "(2, 3, 12)"),  # 3-D
    (torch.zeros(0, 12), "(0, 12)"),  # empty
    (torch.tensor(1.0), "()"),
])
def test_a_condition_tensor_of_the_wrong_shape_is_one_line_naming_the_shape_expected(run, bad, shape):
    with pytest.raises(genkit.UsageError) as refused:
        run.sample(bad)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"attrs is a tensor of shape {shape}; give shape (B, 12) (one row of 12 condition "
                              "values per sample) or (12,)")
    with pytest.raises(genkit.UsageError, match="n 0 must be a positive integer"):
        run.sample(torch.zeros(2, 12), n=0)
