"""The flow of docs/hooks.md (``TinyFlow``), taken from the docs alone, brings only its network:
``genkit.plugin_api``'s path trains it, its guidance and solvers sample it, with their options as
flags of the commands, and run it backwards, so ``genkit reconstruct`` and ``genkit edit`` work.
What it samples is exactly what the plugin API's pieces compute, in the passes they count."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
import torch

import genkit
from conftest import cli, error_line, invoke
from genkit.plugin_api import guided_field, integrate, network_passes

HOOKS = Path(__file__).resolve().parents[2] / "docs" / "hooks.md"
TINY = ["--data", "shapes", "--data-opt", "count=160", "--data-opt", "seed=3", "--image-size", "8",
        "--batch-size", "16", "--device", "cpu"]


def models_source() -> str:
    """The python block of the docs' register_models section, exactly as written."""
    text = HOOKS.read_text()
    section = text[text.index("## register_models(register)"):text.index("### A model that owns its training step")]
    return re.search(r"^```python\n(.*?)^```", section, re.S | re.M).group(1)


@pytest.fixture(scope="module")
def plugin():
    module = types.ModuleType("tiny_flow_from_docs")
    exec(compile(models_source(), "docs/hooks.md (register_models)", "exec"), module.__dict__)
    assert genkit.register_plugin(module, name="tiny-flow-docs") == "tiny-flow-docs", genkit.plugin_errors()
    yield module
    genkit.unregister_plugin("tiny-flow-docs")


@pytest.fixture(scope="module")
def flow_run(plugin, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-flow") / "run"
    code, output = cli("train", "--model", "tiny-flow", *TINY, "--epochs", "1", "--out", str(out))
    assert code == 0, output
    return out


def test_it_samples_with_guidance_and_solver_options_as_flags(flow_run, tmp_path):
    out = tmp_path / "s.png"
    code, output = cli("sample", "--run", str(flow_run), "--attrs", "shape::circle", "--n", "2", "--guidance", "3",
                       "--solver", "heun", "--sampling-steps", "4", "--guidance-from", "0.25", "--out", str(out))
    assert code == 0 and out.is_file(), output
    assert error_line(invoke(["sample", "--run", flow_run, "--guidance-from", "2"])).startswith(
        "error: --guidance-from 2 must be a time from 0 (noise) to 1 (image), for example --guidance-from 0.3")
    assert "--solver 'rk4' must be one of euler, heun" in error_line(invoke(["sample", "--run", flow_run,
                                                                             "--solver", "rk4"]))
    assert "--guidance-from 0.7 is after --guidance-until 0.6" in error_line(invoke(
        ["sample", "--run", flow_run, "--guidance-from", "0.7", "--guidance-until", "0.6"]))


def test_what_it_samples_is_the_plugin_apis_guided_field_integrated(flow_run):
    run = genkit.load_run(flow_run, device="cpu")
    model = run.model
    condition, noise = run.condition("shape::circle", 3), run.noise(3, 5)
    rows = []
    velocity = model.velocity
    model.velocity = lambda x, t, vector: rows.append(len(x)) or velocity(x, t, vector)
    images = run.sample(condition[0], n=3, seed=5, guidance=3.0, steps=4, solver="heun", guidance_from=0.25)
    assert len(rows) == 8 and sum(rows) // 3 == network_passes(4, "heun", [3.0], (0.25, 1.0)) == 15  # t = 0 unguided
    vector = model.conditioner.vector(condition)
    null = model.conditioner.vector(model.conditioner.null_condition(3))
    field = guided_field(velocity, [vector], [3.0], null, interval=(0.25, 1.0))
    assert torch.equal(images, integrate(field, noise, 4, "heun").clamp(0, 1))
    # its inversion is the same field run backwards: back to the noise as the steps get small
    x = integrate(field, noise, 40, "heun")
    back = model.invert(x, condition, guidance=3.0, steps=40, solver="heun", guidance_from=0.25)
    assert (back - noise).abs().max() < 1e-4


def test_its_inversion_gives_it_reconstruct_and_edit(flow_run, tmp_path):
    assert genkit.load_run(flow_run, device="cpu").capabilities == {"posterior": False, "invert": True,
                                                                    "partial_invert": True,
                                                                    "log_likelihood": False,
                                                                    "partial_conditions": False}
    for command in (["edit", "--index", "0-1", "--set", "color::blue"], ["reconstruct", "--n", "2"]):
        out = tmp_path / f"{command[0]}.png"
        code, output = cli(command[0], "--run", str(flow_run), *command[1:], "--sampling-steps", "4",
                           "--guidance", "1.5", "--guidance-from", "0.5", "--out", str(out))
        assert code == 0 and out.is_file(), output


def test_its_partway_pair_round_trips_and_gives_it_edits_part_of_the_way(flow_run, tmp_path):
    run = genkit.load_run(flow_run, device="cpu")
    model = run.model
    condition = run.condition("shape::circle", 2)
    images = run.sample(condition[0], n=2, seed=3, steps=40)
    vector = model.conditioner.vector(condition)
    null = model.conditioner.vector(model.conditioner.null_condition(2))
    field = guided_field(model.velocity, [vector], [2.0], null)
    latent = model.invert_partway(images, condition, 0.4, steps=40)
    assert torch.equal(latent, integrate(field, images, 16, start=0.6, backwards=True))  # round(40·0.4) steps
    back = model.sample_partway(latent, condition, 0.4, steps=40)
    assert torch.equal(back, integrate(field, latent, 16, start=0.6).clamp(0, 1))
    assert (back - images).abs().max() < 0.02  # back near the image (Euler's steps: not exactly)
    noise = run.noise(2, 4)
    assert torch.equal(model.sample_partway(noise, condition, 1.0), model.sample(condition, noise))
    out = tmp_path / "partway.png"
    code, output = cli("edit", "--run", str(flow_run), "--index", "0", "--set", "color::blue", "--edit-depth", "0.5",
                       "--invert-opt", "guidance=1", "--out", str(out))
    assert code == 0 and out.is_file() and "(redraw, depth 0.5 edits)" in output, output
