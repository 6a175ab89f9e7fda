"""What one view of `genkit serve` may cost, for a model that declares its sampling cost (``sampling_cost``):
refused above MAX_PASSES before anything is drawn, and drawn in network calls of at most MAX_ROWS rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import genkit
import genkit.plugin_api
from genkit.serve.guard import MAX_PASSES, MAX_ROWS
from genkit.serve.page import RunPage

#: every control of the shapes page at "any" except a circle: shape, color, then large, left, top, outline
CIRCLE = ["shape::circle", "any", "any", "any", "any", "any"]


class Recorder(nn.Module):
    """A model whose every sampler call is recorded (rows asked for); with ``width`` rows per sample and pass."""

    noise_shape = (2,)

    def __init__(self, width: int | None):
        super().__init__()
        self.width = width
        self.calls: list[int] = []
        if width is not None:
            self.sampling_cost = lambda condition, steps=4: (len(condition) * steps * self.width, self.width)

    def sample(self, condition, noise=None, generator=None, *, steps: int = 4):
        """Grey images.

        :param steps: network passes a sample takes.
        """
        self.calls.append(len(condition))
        return torch.full((len(condition), 3, 8, 8), 0.5)


@pytest.fixture(scope="module")
def config():
    return genkit.plan_run("cvae", "shapes", data_options={"count": 160, "seed": 3}, image_size=8, epochs=1,
                           device="cpu")


def _page(config, width: int | None) -> RunPage:
    conditioner = genkit.registry("conditioners").get("tiled-onehot").create(config.data.attribute_names)
    run = genkit.Run(Path("runs/toy"), config, Recorder(width), conditioner, None, torch.device("cpu"))
    return RunPage(run, "toy")


def test_a_view_costing_more_than_max_passes_is_refused_in_one_line_before_anything_is_drawn(config):
    page = _page(config, width=2)
    too_many = MAX_PASSES // (2 * 64) + 1  # steps for which 64 samples of two rows a pass exceed the bound
    with pytest.raises(genkit.UsageError) as refused:
        page.grid(page.spec(CIRCLE), 64, 0, "off", {"steps": too_many})
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"this view would take {64 * too_many * 2:,} network passes "
                                                      f"(64 samples), more than the {MAX_PASSES:,} one view may take")
    assert page.run.model.calls == []  # counted, never drawn
    with pytest.raises(genkit.UsageError, match="network passes"):  # 16 x 16 interpolation images
        page.interpolate("shape::circle", "shape::square", 16, 16, 0, "off", {"steps": too_many})
    with pytest.raises(genkit.UsageError, match=r"\(128 samples\)"):  # vary: two rows of 64
        page.vary(page.spec(CIRCLE), "large", 64, 0, "off", {"steps": too_many})
    assert page.run.model.calls == []
    page.grid(page.spec(CIRCLE), 64, 0, "off", {"steps": too_many - 1})  # at the bound: drawn
    assert sum(page.run.model.calls) == 64


@pytest.mark.parametrize("width", [1, 3, 40, 64])
def test_no_network_call_takes_more_than_max_rows(config, width):
    page = _page(config, width)
    page.interpolate("shape::circle", "shape::square", 16, 16, 0, "off", {"steps": 1})  # 256 samples, 16 a row
    calls = page.run.model.calls
    assert sum(calls) == 256 and max(calls) * width <= MAX_ROWS
    assert max(calls) == min(16, MAX_ROWS // width)  # interpolation draws one row of 16 at a time


def test_a_sample_wider_than_max_rows_is_refused_in_one_line_before_anything_is_drawn(config):
    page = _page(config, width=MAX_ROWS + 88)
    with pytest.raises(genkit.UsageError) as refused:
        page.grid(page.spec(CIRCLE), 4, 0, "off", {"steps": 1})
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"one sample of this view would put {MAX_ROWS + 88:,} rows "
                                                      f"through the network at once, more than the {MAX_ROWS:,}")
    assert page.run.model.calls == []
    _page(config, width=MAX_ROWS).grid(page.spec(CIRCLE), 4, 0, "off", {"steps": 1})  # at the bound: drawn


def test_run_sample_takes_a_plain_list_of_numbers_as_conditions(config):
    run = _page(config, width=None).run
    width = run.conditioner.dim
    row = [1.0] + [0.0] * (width - 1)
    assert run.sample(row, n=3).shape == (3, 3, 8, 8)
    assert run.sample([row, row]).shape == (2, 3, 8, 8)
    with pytest.raises(genkit.UsageError, match="unknown attribute"):
        run.sample(["shape::circle", "no-such"])


def test_a_grid_is_split_by_the_declared_width(config):
    page = _page(config, width=16)
    page.grid(page.spec(CIRCLE), 64, 0, "off", {"steps": 1})
    assert page.run.model.calls == [MAX_ROWS // 16, 64 - MAX_ROWS // 16]


def test_a_model_without_the_declaration_keeps_the_pages_own_bounds(config):
    page = _page(config, width=None)
    page.grid(page.spec(CIRCLE), 64, 0, "off", {"steps": 1000})
    assert page.run.model.calls == [64]  # one call, as before


def test_the_flow_declares_its_passes_from_steps_solver_and_guidance():
    image_shape = (3, 8, 8)
    names = list(genkit.plugin_api.SHAPES_ATTRIBUTE_NAMES)
    conditioner = genkit.registry("conditioners").get("tiled-onehot").create(names, partial=True)
    model = genkit.registry("models").get("flow").create(image_shape, conditioner, channels=[8, 16], blocks=1,
                                                         embedding=16, attribute_dropout=0.2)
    condition = conditioner.encode("shape::circle,large").reshape(1, -1).expand(4, -1)
    assert model.sampling_cost(condition) == (4 * 16, 2)  # euler 8, guidance 2: two rows a step
    assert model.sampling_cost(condition, guidance=1.0) == (4 * 8, 1)  # the conditional velocity alone
    assert model.sampling_cost(condition, solver="heun", steps=4) == (4 * 16, 2)  # heun: two evaluations a step
    assert model.sampling_cost(condition, guidance_from=0.5) == (4 * 12, 2)  # 4 steps outside: one row each
    partial = conditioner.encode_partial("shape::circle,large").reshape(1, -1).expand(4, -1)
    assert model.sampling_cost(partial, guidance_mode="composed") == (4 * 8 * 3, 3)  # two units + the null
    assert model.sampling_cost(partial, guidance_mode="composed", attribute_guidance="large=0") == (4 * 16, 2)
    with pytest.raises(genkit.UsageError, match="--sampling-steps 0 is outside"):
        model.sampling_cost(condition, steps=0)
