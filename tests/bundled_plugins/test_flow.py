"""The ``flow`` model and the ``flow-matching`` loss: the path, the solvers and guidance against
hand computations on a toy velocity, inversion, condition and attribute dropout, sampling options, the meta
device, and sampling with the unnamed attributes left to the model."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import genkit
from conftest import FLOW_E2E, error_line, invoke
from genkit.plugin_api import network_passes
from genkit.training.averaging import EMA_FILE
from genkit.training.checkpoints import latest_checkpoint
from genkit.sampling.capabilities import has, noise_shape, resolve_sampling_options, sampling_options
from genkit_plugins.flow import MAX_STEPS, FlowOutput, build
from genkit_plugins.flow_matching import build as build_loss
from genkit_plugins.tiled_onehot import PartialTiledOneHot, TiledOneHot

NAMES = [f"a{i}" for i in range(4)]
SHAPE = (3, 16, 16)


def small_flow(**options) -> torch.nn.Module:
    """A small flow on full conditions, as runs saved before attribute dropout were (ToyVelocity reads the
    conditioner's null feature)."""
    return build(SHAPE, TiledOneHot(NAMES), channels=[4, 8], embedding=8, **{"attribute_dropout": 0.0, **options})


class ToyVelocity(nn.Module):
    """v(x, t, y) = −x/2 + (t + y₀ − 2·null)/4, recording every call's inputs."""

    def __init__(self):
        super().__init__()
        self.dtype_marker = nn.Parameter(torch.zeros(()))  # the model reads its dtype from its parameters
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, x, t, vector):
        self.calls.append((x.clone(), t.clone(), vector.clone()))
        return -x / 2 + ((t + vector[:, 0] - 2 * vector[:, -1]) / 4)[:, None, None, None]


def toy_flow(**options):
    model = small_flow(prediction="velocity", **options)
    model.net = ToyVelocity()
    return model


def test_training_forward_draws_the_straight_path_and_its_velocity():
    model = toy_flow().eval()  # no condition dropout outside training
    images = torch.rand(3, *SHAPE)
    condition = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 1]])
    torch.manual_seed(7)
    out = model(images, condition)
    torch.manual_seed(7)
    t = torch.sigmoid(torch.randn(3))  # logit-normal times, the default
    x0 = torch.randn(3, *SHAPE)
    x1 = images * 2 - 1
    x, seen_t, vector = model.net.calls[0]
    assert isinstance(out, FlowOutput)
    assert torch.equal(out.t, t) and torch.equal(seen_t, t)
    assert torch.allclose(out.target, x1 - x0)
    assert torch.allclose(x, t[:, None, None, None] * x1 + (1 - t[:, None, None, None]) * x0)
    assert torch.equal(vector, model.conditioner.vector(condition))
    assert torch.allclose(out.velocity, -x / 2 + ((t + condition[:, 0]) / 4)[:, None, None, None])


def test_one_euler_and_one_heun_step_match_the_hand_computation():
    model = toy_flow()
    condition = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0]])
    noise = 0.1 * torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0))
    c = condition[:, :1, None, None]
    v0 = -noise / 2 + (0 + c) / 4                      # v at (x₀, t = 0), guidance 1
    euler = noise + 1.0 * v0
    assert torch.allclose(model.sample(condition, noise, guidance=1.0, steps=1, solver="euler"), (euler + 1) / 2)
    v1 = -euler / 2 + (1 + c) / 4                      # v at the Euler guess, t = 1
    heun = noise + 1.0 * (v0 + v1) / 2
    assert torch.allclose(model.sample(condition, noise, guidance=1.0, steps=1, solver="heun"), (heun + 1) / 2)
    # two Euler steps of h = 1/2: the second at t = 1/2
    half = noise + 0.5 * v0
    two = half + 0.5 * (-half / 2 + (0.5 + c) / 4)
    assert torch.allclose(model.sample(condition, noise, guidance=1.0, steps=2, solver="euler"), (two + 1) / 2)


@pytest.mark.parametrize("guidance", [0.0, 1.0, 2.5])
def test_guidance_is_the_null_velocity_plus_w_times_the_difference_in_the_passes_it_needs(guidance):
    model = toy_flow()
    condition = torch.tensor([[1.0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    noise = torch.zeros(3, *SHAPE)
    out = model.sample(condition, noise, guidance=guidance, steps=1, solver="euler")
    conditional = condition[:, 0] / 4        # v(0, 0, y) = y₀/4
    unconditional = torch.full((3,), -0.5)  # v(0, 0, null): the null feature is 1, y₀ reads 0
    expected = unconditional + guidance * (conditional - unconditional)
    assert torch.allclose(out, ((expected[:, None, None, None] + 1) / 2).expand_as(out).clamp(0, 1))
    calls = model.net.calls
    assert len(calls) == 1                # one batched pass per step, whatever the scale
    null = model.conditioner.vector(model.conditioner.null_condition(3))
    rows = {0.0: null, 1.0: model.conditioner.vector(condition)}.get(
        guidance, torch.cat([model.conditioner.vector(condition), null]))
    assert torch.equal(calls[0][2], rows)


def test_outside_the_guidance_interval_a_step_is_one_conditional_pass():
    model = toy_flow()
    condition = torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 0]])
    noise = 0.1 * torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(2))
    default = model.sample(condition, noise, steps=4, solver="heun")
    assert torch.equal(default, model.sample(condition, noise, steps=4, solver="heun", guidance_from=0.0,
                                             guidance_until=1.0))  # the default interval: guidance everywhere
    model.net.calls.clear()
    images = model.sample(condition, noise, guidance=2.0, steps=4, guidance_from=0.5)
    assert [(float(t[0]), len(t)) for _, t, _ in model.net.calls] == [(0.0, 2), (0.25, 2), (0.5, 4), (0.75, 4)]
    assert sum(len(t) for _, t, _ in model.net.calls) // 2 == network_passes(4, "euler", [2.0], (0.5, 1.0))
    assert torch.equal(model.net.calls[0][2], model.conditioner.vector(condition))
    assert not torch.equal(images, model.sample(condition, noise, guidance=2.0, steps=4))
    model.invert(images, condition, guidance=2.0, steps=4, guidance_from=0.5)  # the same interval, backwards
    assert [float(t[0]) for _, t, _ in model.net.calls[-4:]] == [1.0, 0.75, 0.5, 0.25]


PARTIAL_NAMES = ["shape::circle", "shape::square", "color::red", "color::blue", "large", "left"]


class UnitVelocity(nn.Module):
    """v(x, t, y) = −x/2 + (features · k)/8 with a different k per feature, recording each call's rows."""

    def __init__(self, width: int):
        super().__init__()
        self.dtype_marker = nn.Parameter(torch.zeros(()))
        self.register_buffer("k", torch.arange(1.0, width + 1))
        self.rows: list[int] = []

    def forward(self, x, t, vector):
        self.rows.append(len(x))
        return -x / 2 + ((vector * self.k).sum(1) / 8 + t)[:, None, None, None]


def partial_toy_flow():
    from genkit_plugins.tiled_onehot import build as conditioner
    model = build(SHAPE, conditioner(PARTIAL_NAMES), channels=[4, 8], embedding=8, prediction="velocity").eval()
    model.net = UnitVelocity(model.conditioner.vector_dim)
    return model


def test_composed_guidance_sums_each_given_unit_s_guidance_in_one_pass_a_step():
    model = partial_toy_flow()
    conditioner = model.conditioner
    # shape and large given, colour and left left to the model
    condition = torch.tensor([[1.0, 0, -1, -1, 1, -1], [0, 1, -1, -1, 0, -1]])
    noise = 0.1 * torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0))
    images = model.sample(condition, noise, steps=1, guidance=3.0, guidance_mode="composed",
                          attribute_guidance="large=0.5")
    null = conditioner.null_condition(2)
    shape_alone, large_alone = null.clone(), null.clone()
    shape_alone[:, :2], large_alone[:, 4] = condition[:, :2], condition[:, 4]

    def v(c):
        return -noise / 2 + ((conditioner.vector(c) * model.net.k).sum(1) / 8)[:, None, None, None]

    velocity = v(null) + 3.0 * (v(shape_alone) - v(null)) + 0.5 * (v(large_alone) - v(null))
    assert torch.allclose(images, ((noise + velocity + 1) / 2).clamp(0, 1), atol=1e-6)
    assert model.net.rows == [2 * 3]  # one call: two units and the null, for both samples
    model.net.rows.clear()
    model.sample(condition, noise, steps=4, guidance_mode="composed", guidance_from=0.5)
    assert model.net.rows == [2, 2, 6, 6]  # outside the interval the condition alone, one pass
    model.net.rows.clear()
    everything = torch.tensor([[1.0, 0, 1, 0, 1, 0]])
    model.sample(everything, noise[:1], steps=1, guidance_mode="composed")
    assert model.net.rows == [5]  # the cost grows with the units given: four and the null


def test_composed_guidance_with_one_unit_is_joint_guidance():
    model = partial_toy_flow()
    condition = torch.tensor([[-1.0, -1, 1, 0, -1, -1]])
    noise = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(model.sample(condition, noise, steps=3, guidance_mode="composed"),
                          model.sample(condition, noise, steps=3))


@pytest.mark.parametrize("weights, message", [
    ("left=-1", "--attribute-guidance 'left=-1': the weight must be a number from 0 to 50, for example left=2"),
    ("left=nan", "--attribute-guidance 'left=nan': the weight must be a number from 0 to 50"),
    ("left=inf", "--attribute-guidance 'left=inf': the weight must be a number from 0 to 50"),
    ("size=2", "--attribute-guidance 'size=2' is not UNIT=WEIGHT with a unit of this run (shape, color, large, "
               "left); for example --attribute-guidance shape=3"),
    ("left", "--attribute-guidance 'left' is not UNIT=WEIGHT"),
])
def test_bad_attribute_guidance_is_one_line(weights, message):
    model = partial_toy_flow()
    with pytest.raises(genkit.UsageError) as caught:
        resolve_sampling_options(model, {"guidance_mode": "composed", "attribute_guidance": weights}, "flow")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert model.unit_weights("shape::circle=4,left=0") == {"shape": 4.0, "left": 0.0}  # a value names its family


@pytest.mark.parametrize("solver, steps, tolerance", [("euler", 400, 3e-3), ("heun", 50, 1e-5)])
def test_invert_then_sample_gives_back_the_noise(solver, steps, tolerance):
    model = toy_flow()
    condition = torch.tensor([[0.0, 1, 0, 0], [0, 0, 1, 0]])
    noise = 0.1 * torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(1))
    for guidance in (1.0, 2.0):
        images = model.sample(condition, noise, guidance=guidance, steps=steps, solver=solver)
        assert 0 < images.min() and images.max() < 1  # not clipped, so invertible
        back = model.invert(images, condition, guidance=guidance, steps=steps, solver=solver)
        assert (back - noise).abs().max() < tolerance
    one_step = model.invert(images, condition, guidance=2.0, steps=1, solver=solver)
    assert (one_step - noise).abs().max() > 10 * tolerance  # the test can fail


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_partway_inversion_and_sampling_integrate_only_the_last_part_of_the_path(shift):
    from genkit.transport.solvers import evaluation_times

    model = toy_flow(time_shift=shift)
    condition = torch.tensor([[0.0, 1, 0, 0], [0, 0, 1, 0]])
    images = model.sample(condition, 0.1 * torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(1)),
                          steps=16)
    model.net.calls.clear()
    latent = model.invert_partway(images, condition, 0.3, guidance=1.0, steps=16)
    times = [float(t[0]) for _, t, _ in model.net.calls]
    assert len(times) == round(16 * 0.3) == 5  # max(1, round(steps·depth)) steps, one pass each at guidance 1
    assert times == pytest.approx(evaluation_times(5, start=0.7, backwards=True, shift=shift))
    assert min(times) > 0.7 - 1e-6  # nothing before t = 1 − depth
    model.net.calls.clear()
    back = model.sample_partway(latent, condition, 0.3, guidance=1.0, steps=16)
    assert [float(t[0]) for _, t, _ in model.net.calls] == pytest.approx(
        evaluation_times(5, start=0.7, shift=shift))
    assert (back - images).abs().max() < 0.02 and not torch.equal(back, images)
    fine = model.sample_partway(model.invert_partway(images, condition, 0.3, steps=400), condition, 0.3, steps=400)
    assert (fine - images).abs().max() < 1e-3  # the round trip is exact as the steps get small
    assert model.invert_partway(images, condition, 0.01, steps=8).shape == images.shape  # at least one step
    # at depth 1 they are invert and sample: one code path
    noise = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(2))
    assert torch.equal(model.sample_partway(noise, condition, 1.0, steps=4), model.sample(condition, noise, steps=4))
    assert torch.equal(model.invert_partway(images, condition, 1.0, steps=4), model.invert(images, condition, steps=4))
    assert has(model, "partial_invert")
    for depth in (0, 1.5, float("nan"), True):
        with pytest.raises(genkit.UsageError, match=r"must be in \(0, 1\]"):
            model.invert_partway(images, condition, depth)


def test_uniform_times_when_asked():
    model = toy_flow(time_sampling="uniform").eval()
    images = torch.rand(2, *SHAPE)
    torch.manual_seed(3)
    out = model(images, torch.zeros(2, 4))
    torch.manual_seed(3)
    assert torch.equal(out.t, torch.rand(2))


def test_preconditioning_adds_the_scaled_network_output_to_the_best_linear_guess():
    model = small_flow()
    model.net = ToyVelocity()
    x, t, vector = torch.randn(2, *SHAPE), torch.tensor([0.0, 0.75]), torch.zeros(2, model.conditioner.vector_dim)
    out = model.predict(x, t, vector)
    tt = t[:, None, None, None]
    spread = (tt * 0.5) ** 2 + (1 - tt) ** 2
    scaled_in, _, _ = model.net.calls[-1]
    assert torch.allclose(scaled_in, x / spread.sqrt())
    raw = -scaled_in / 2 + ((t + vector[:, 0] - 2 * vector[:, -1]) / 4)[:, None, None, None]
    assert torch.allclose(out, (tt * 0.25 - (1 - tt)) / spread * x + 0.5 / spread.sqrt() * raw)
    # at t = 0 x is pure noise: the linear guess is −x (v = x₁ − x₀ with E[x₁] = 0)
    assert torch.allclose(out[0], -x[0] + 0.5 * raw[0])


def test_condition_dropout_replaces_conditions_by_the_null_one_only_in_training():
    model = toy_flow(condition_dropout=0.5)
    condition = torch.ones(64, 4)
    torch.manual_seed(0)
    model(torch.rand(64, *SHAPE), condition)
    vectors = model.net.calls[-1][2]
    null = model.conditioner.vector(model.conditioner.null_condition(1))
    given = model.conditioner.vector(condition[:1])
    dropped = (vectors == null).all(dim=1)
    assert torch.all(dropped | (vectors == given).all(dim=1))
    assert 16 < int(dropped.sum()) < 48
    model.eval()
    model(torch.rand(64, *SHAPE), condition)
    assert torch.equal(model.net.calls[-1][2], given.expand(64, -1))


def partial_flow(**options):
    model = build(SHAPE, PartialTiledOneHot(NAMES), channels=[4, 8], embedding=8, prediction="velocity", **options)
    model.net = ToyVelocity()
    return model


def test_attribute_dropout_leaves_each_attribute_unspecified_independently_only_in_training():
    model = partial_flow(attribute_dropout=0.4, condition_dropout=1e-6)  # nearly no whole-condition null
    rows = 4000
    condition = torch.tensor([[1.0, 0, 1, 0]]).expand(rows, -1)
    torch.manual_seed(0)
    model(torch.rand(rows, *SHAPE), condition)
    vector = model.net.calls[-1][2]
    unspecified = (vector[:, :4] == 0) & (vector[:, 4:] == 0)  # neither on nor off
    rate = unspecified.float().mean(0)
    assert ((rate - 0.4).abs() < 0.03).all(), rate  # each attribute (here a unit of its own) about 0.4 (sd 0.008)
    both = (unspecified[:, :, None] & unspecified[:, None, :]).float().mean(0)
    assert ((both - rate[:, None] * rate[None, :]).fill_diagonal_(0).abs() < 0.03).all()  # independently
    specified = ~unspecified
    assert torch.equal(vector[:, :4][specified], condition[specified])  # what is kept is the condition
    model.eval()
    model(torch.rand(8, *SHAPE), condition[:8])
    assert torch.equal(model.net.calls[-1][2], model.conditioner.vector(condition[:8]))


def test_without_attribute_dropout_training_draws_what_it_always_drew():
    model = small_flow()
    torch.manual_seed(2)
    model(torch.rand(3, *SHAPE), torch.ones(3, 4))
    after = torch.get_rng_state()
    torch.manual_seed(2)
    torch.rand(3, *SHAPE), torch.randn(3), torch.randn(3, *SHAPE), torch.rand(3)  # images, t, x0, condition dropout
    assert torch.equal(torch.get_rng_state(), after)  # so a run saved before attribute dropout trains and resumes equal


def test_a_flow_declares_partial_conditions_only_when_trained_with_attribute_dropout():
    assert has(partial_flow(attribute_dropout=0.2), "partial_conditions")
    assert not has(partial_flow(attribute_dropout=0.0), "partial_conditions")
    assert not has(small_flow(), "partial_conditions")


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.1, 1.0, 1.5])
def test_an_attribute_dropout_outside_0_to_1_is_refused(value):
    with pytest.raises(genkit.UsageError) as caught:
        build(SHAPE, PartialTiledOneHot(NAMES), attribute_dropout=value)
    assert str(caught.value) == (f"attribute_dropout {value} must be in [0, 1): the probability that training leaves "
                                 "each attribute (or family) unspecified, 0 for never; for example --model-opt "
                                 "attribute_dropout=0.2")


def test_attribute_dropout_needs_a_conditioner_that_can_drop():
    with pytest.raises(genkit.UsageError, match=re.escape(
            "attribute_dropout 0.2 needs a conditioner that can leave attributes unspecified (drop, encode_partial); "
            "TiledOneHot cannot: use --model-opt attribute_dropout=0")):
        build(SHAPE, TiledOneHot(NAMES))
    build(SHAPE, TiledOneHot(NAMES), attribute_dropout=0.0)


@pytest.mark.parametrize("flags, message", [
    (["--model-opt", "attribute_dropout=1"], "attribute_dropout 1 must be in [0, 1)"),
    (["--attribute-dropout", "nan"], "attribute_dropout nan must be in [0, 1)"),
    (["--attribute-dropout", "-0.5"], "attribute_dropout -0.5 must be in [0, 1)"),
    (["--conditioner-opt", "partial=false"], "TiledOneHot cannot: use --model-opt attribute_dropout=0"),
])
def test_bad_attribute_dropout_is_one_line_before_anything_is_written(tmp_path, flags, message):
    out = tmp_path / "never"
    line = error_line(invoke(["train", "--model", "flow", *E2E, *flags, "--out", out]))
    assert message in line
    assert not out.exists()


def test_the_loss_is_the_mean_squared_velocity_error_and_reports_it():
    velocity, target = torch.randn(2, *SHAPE), torch.randn(2, *SHAPE)
    result = build_loss()(FlowOutput(velocity, target, torch.rand(2)), torch.rand(2, *SHAPE))
    expected = (velocity - target).pow(2).mean()
    assert torch.allclose(result.total, expected)
    assert set(result.terms) == {"mse"} and torch.allclose(result.terms["mse"], expected)


def test_the_loss_names_the_field_a_cvae_output_lacks():
    output = genkit.ModelOutput(reconstruction=torch.rand(1, *SHAPE), mu=torch.zeros(1, 2), logvar=torch.zeros(1, 2))
    with pytest.raises(AttributeError, match="velocity"):
        build_loss()(output, torch.rand(1, *SHAPE))


def test_model_and_loss_run_on_the_meta_device():
    with torch.device("meta"):
        model = small_flow()
        images, condition = torch.zeros(2, *SHAPE), torch.zeros(2, len(NAMES))
        result = build_loss()(model(images, condition), images)
    assert result.total.device.type == "meta" and result.total.shape == ()
    assert all(p.device.type == "meta" for p in model.parameters())


def test_the_contract_noise_shape_capabilities_and_sampling_options():
    model = small_flow()
    assert noise_shape(model) == SHAPE
    assert has(model, "invert") and not has(model, "posterior") and not has(model, "log_likelihood")
    options = sampling_options(model)
    assert list(options) == ["guidance", "steps", "solver", "guidance_from", "guidance_until", "guidance_mode",
                             "attribute_guidance"]
    assert [o.flag for o in options.values()] == ["--guidance", "--sampling-steps", "--solver", "--guidance-from",
                                                  "--guidance-until", "--guidance-mode", "--attribute-guidance"]
    assert options["solver"].choices == ("euler", "heun", "mean")
    assert options["guidance_mode"].choices == ("joint", "composed")
    assert "classifier-free guidance" in options["guidance"].help
    samples = model.sample(torch.zeros(2, len(NAMES)), generator=torch.Generator().manual_seed(0), steps=2)
    assert samples.shape == (2, *SHAPE) and 0 <= samples.min() and samples.max() <= 1
    assert torch.equal(samples, model.sample(torch.zeros(2, len(NAMES)), torch.randn(
        2, *SHAPE, generator=torch.Generator().manual_seed(0)), steps=2))


@pytest.mark.parametrize("given, message", [
    ({"guidance": -1}, "--guidance -1 is outside [0, 50]; choose for example 2"),
    ({"guidance": 1e6}, "--guidance 1e+06 is outside [0, 50]; choose for example 2"),
    ({"guidance": "-0.5"}, "--guidance -0.5 is outside [0, 50]"),
    ({"guidance": float("nan")}, "--guidance nan must be a finite number"),
    ({"guidance": "inf"}, "--guidance inf must be a finite number"),
    ({"steps": 0}, f"--sampling-steps 0 is outside 1 to {MAX_STEPS}; choose for example 8"),
    ({"steps": "-3"}, f"--sampling-steps -3 is outside 1 to {MAX_STEPS}"),
    ({"steps": MAX_STEPS + 1}, f"--sampling-steps {MAX_STEPS + 1} is outside 1 to {MAX_STEPS}"),
    ({"steps": 2.5}, "--sampling-steps 2.5 must be a whole number"),
    ({"solver": "rk4"}, "--solver 'rk4' must be one of euler, heun"),
    ({"guidance_from": 1.5}, "--guidance-from 1.5 must be a time from 0 (noise) to 1 (image), for example "
                             "--guidance-from 0.3"),
    ({"guidance_until": "-0.5"}, "--guidance-until -0.5 must be a time from 0 (noise) to 1 (image)"),
    ({"guidance_until": "nan"}, "--guidance-until nan must be a finite number"),
    ({"guidance_from": "inf"}, "--guidance-from inf must be a finite number"),
    ({"guidance_from": 0.9, "guidance_until": 0.2}, "--guidance-from 0.9 is after --guidance-until 0.2"),
    ({"temperature": 1.0}, "'temperature' is not a sampling option of model 'flow' (its sampling options: "
                           "--guidance, --sampling-steps, --solver, --guidance-from, --guidance-until, --guidance-mode, "
                           "--attribute-guidance)"),
    ({"guidance_mode": "sum"}, "--guidance-mode 'sum' must be one of joint, composed"),
    ({"guidance_mode": "composed"}, "--guidance-mode composed needs a flow trained with each attribute left out at "
                                    "times (attribute_dropout above 0), and this run was trained without: use "
                                    "--guidance-mode joint"),
    ({"attribute_guidance": "a=2"}, "--attribute-guidance weighs the units of composed guidance; add "
                                    "--guidance-mode composed"),
])
def test_bad_sampling_options_are_refused_in_one_line_naming_the_flag(given, message):
    with pytest.raises(genkit.UsageError) as caught:
        resolve_sampling_options(small_flow(), given, "flow")
    text = str(caught.value)
    assert text.startswith(message) and "\n" not in text


def test_the_model_checks_its_options_itself_too():
    model = small_flow()
    for bad in ({"guidance": math.nan}, {"guidance": math.inf}, {"steps": 0}, {"solver": "rk4"},
                {"guidance_from": math.nan}, {"guidance_from": 0.6, "guidance_until": 0.5}):
        with pytest.raises(genkit.UsageError):
            model.sample(torch.zeros(1, len(NAMES)), **bad)
    assert resolve_sampling_options(model, {"guidance": "0", "steps": "1000", "solver": "heun"}) == \
        {"guidance": 0.0, "steps": 1000, "solver": "heun", "guidance_from": 0.0, "guidance_until": 1.0,
         "guidance_mode": "joint", "attribute_guidance": ""}
    with pytest.raises(genkit.UsageError, match="--guidance-until 2 must be a time"):
        model.invert(torch.rand(1, *SHAPE), torch.zeros(1, len(NAMES)), guidance_until=2)


@pytest.mark.parametrize("options, size, message", [
    ({"patch": 2, "channels": [4, 8]}, (30, 30), "sides must be multiples of 4); choose 28x28 or 32x32"),
    ({"patch": 4, "channels": [4, 8]}, (36, 20), "sides must be multiples of 8); choose 32x16 or 40x24"),
])
def test_sizes_the_network_cannot_take_are_refused_naming_the_nearest_that_work(options, size, message):
    with pytest.raises(genkit.UsageError) as caught:
        build((3, *size), PartialTiledOneHot(NAMES), **options)
    assert str(caught.value).endswith(message)
    for nearest in message.rsplit("choose ", 1)[1].split(" or "):  # the advice works as written
        build((3, *map(int, nearest.split("x"))), PartialTiledOneHot(NAMES), **options)


@pytest.mark.parametrize("options, message", [
    ({"condition_dropout": 1.0}, "condition_dropout 1.0 must be in (0, 1)"),
    ({"condition_dropout": 0.0}, "condition_dropout 0.0 must be in (0, 1): sampling with guidance needs"),
    ({"patch": 0}, "patch 0 must be a positive whole number"),
    ({"channels": []}, "channels [] must be one or more positive widths"),
    ({"blocks": 0}, "blocks 0 must be a positive whole number"),
    ({"channels": "16"}, "channels '16' must be one or more positive widths"),
    ({"prediction": "noise"}, "prediction 'noise' is not known; choose one of: preconditioned, velocity"),
    ({"time_sampling": "cosine"}, "time_sampling 'cosine' is not known; choose one of: logit-normal, uniform"),
    ({"attention": 4}, "attention 4 must be a whole number of levels from 0 to 3"),
    ({"attention": -1}, "attention -1 must be a whole number of levels from 0 to 3"),
    ({"attention": True}, "attention True must be a whole number of levels"),
    ({"positions": "yes"}, "positions 'yes' must be true or false"),
    ({"placement": 1}, "placement 1 must be true or false"),
    ({"time_shift": 0.5}, "time shift 0.5 must be a number of 1 or more"),
    ({"mean_flow": 1.0}, "mean_flow 1.0 must be a number from 0 to under 1"),
])
def test_bad_model_options_are_refused(options, message):
    with pytest.raises(genkit.UsageError, match=re.escape(message)):
        build(SHAPE, PartialTiledOneHot(NAMES), **options)


def test_attention_positions_and_placement_start_as_the_identity():
    """A new network with attention at its lowest level, position embeddings and placement maps computes
    what the same network without them computes: all start as the identity, so they change nothing until trained."""
    options = dict(channels=[8, 16], embedding=8)
    torch.manual_seed(0)
    plain = build((3, 64, 64), PartialTiledOneHot(NAMES), attention=0, positions=False, placement=False, **options)
    torch.manual_seed(0)
    seeing = build((3, 64, 64), PartialTiledOneHot(NAMES), attention=1, positions=True, placement=True, **options)
    x, t = torch.randn(2, 3, 64, 64), torch.rand(2)
    vector = plain.conditioner.vector(torch.zeros(2, len(NAMES)))
    loaded = seeing.net.load_state_dict(plain.net.state_dict(), strict=False)
    assert loaded.unexpected_keys == [] and loaded.missing_keys  # the attention and position layers are new
    assert torch.equal(plain.net(x, t, vector), seeing.net(x, t, vector))


def test_adaptive_flow_matching_weights_each_images_error_by_its_inverse_power():
    """adaptive p: loss = mean(sg(1 / (e + 0.001)^p) · e) over images, e each image's mean squared error;
    the logged mse stays the plain one, and p = 0 is the plain loss."""
    from types import SimpleNamespace

    velocity = torch.tensor([[[[1.0, 1.0]]], [[[0.0, 0.0]]]], requires_grad=True)
    target = torch.tensor([[[[0.0, 0.0]]], [[[0.0, 0.2]]]])
    output = SimpleNamespace(velocity=velocity, target=target)
    errors = torch.tensor([1.0, 0.02])
    result = build_loss(adaptive=1)(output, None)
    assert result.total.item() == pytest.approx(float((errors / (errors + 1e-3)).mean()))
    assert result.terms["mse"].item() == pytest.approx(float(errors.mean()))
    assert build_loss()(output, None).total.item() == pytest.approx(float(errors.mean()))
    result.total.backward()
    assert velocity.grad is not None


@pytest.mark.parametrize("value", [-1, 3, float("nan"), True])
def test_a_bad_adaptive_power_is_refused_in_one_line(value):
    with pytest.raises(genkit.UsageError, match=r"adaptive .* must be a number from 0 to 2 .*--loss-opt adaptive=1"):
        build_loss(adaptive=value)


def test_flow_runs_saved_before_the_position_options_read_them_as_off():
    """A run's config.json from before attention, positions and placement were options (and before
    attribute_dropout) builds the network it was trained with, not today's default."""
    from genkit.components.loading import registry

    flow = registry("models").get("flow")
    assert {k: flow.with_older_runs({})[k] for k in ("attention", "positions", "placement", "attribute_dropout")} \
        == {"attention": 0, "positions": False, "placement": False, "attribute_dropout": 0.0}
    assert flow.with_older_runs({"placement": True})["placement"] is True  # a recorded value wins
    assert flow.train_defaults["grad_clip"] == 1.0


def test_a_mean_flow_learns_average_velocities_and_samples_by_jumps_a_plain_flow_refuses():
    """With mean_flow the training output is the average velocity and its MeanFlow target (the target
    without gradient), and ``--solver mean`` draws an image in one network pass per step; a run trained
    without refuses that solver in one line naming the option that would allow it."""
    torch.manual_seed(0)
    model = build((3, 16, 16), PartialTiledOneHot(NAMES), channels=[8, 16], embedding=8, mean_flow=0.5)
    images, condition = torch.rand(4, 3, 16, 16), torch.zeros(4, len(NAMES))
    out = model(images, condition)
    assert out.velocity.requires_grad and not out.target.requires_grad
    model.eval()
    calls = []
    model.net.register_forward_hook(lambda module, args, output: calls.append(args[3]))
    drawn = model.sample(condition, generator=torch.Generator().manual_seed(0), solver="mean", steps=2, guidance=1)
    assert drawn.shape == (4, 3, 16, 16) and 0 <= drawn.min() and drawn.max() <= 1
    assert [end.tolist() for end in calls] == [[0.5] * 4, [1.0] * 4]  # one pass a step, to the next time
    plain = build((3, 16, 16), PartialTiledOneHot(NAMES), channels=[8, 16], embedding=8)
    with pytest.raises(genkit.UsageError, match=re.escape("--solver mean jumps by average velocities, which this "
                                                          "run did not learn")):
        plain.sample(condition, solver="mean")


# ---- end to end: genkit train --model flow, resume, torchrun, the commands ------------------------------------

E2E = FLOW_E2E  # the session's flow_run (conftest) is trained with these


def test_model_flow_alone_trains_with_its_own_loss_batch_and_averaging(flow_run):
    config = json.loads((flow_run / "config.json").read_text())
    assert config["loss"]["name"] == "flow-matching"
    assert config["train"]["batch_size"] == 8 and config["train"]["ema"] == 0.999
    assert config["model"]["options"]["prediction"] == "preconditioned"
    assert (flow_run / "samples" / "epoch_001.png").is_file()
    metrics = json.loads((flow_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(metrics["val_loss"]) and "val_mse" in metrics


def test_a_flow_run_samples_with_its_options_from_the_api_and_the_command_line(flow_run, tmp_path):
    run = genkit.load_run(flow_run, device="cpu")
    assert run.capabilities == {"posterior": False, "invert": True, "partial_invert": True, "log_likelihood": False,
                                "partial_conditions": True}
    a = run.sample("shape::circle", n=2, seed=3, rest="off", guidance=3.0, steps=2, solver="heun")
    expected = run.model.sample(run.condition("shape::circle", 2), run.noise(2, 3), guidance=3.0, steps=2,
                                solver="heun")
    assert torch.equal(a, expected) and not torch.equal(a, run.sample("shape::circle", n=2, seed=3, rest="off"))
    out = tmp_path / "s.png"
    result = invoke(["sample", "--run", flow_run, "--attrs", "shape::circle", "--n", "2", "--guidance", "3",
                     "--sampling-steps", "2", "--solver", "heun", "--out", out])
    assert result.exit_code == 0 and out.is_file(), result.output
    result = invoke(["sample", "--run", flow_run, "--sampling-steps", "0", "--out", tmp_path / "never.png"])
    assert "--sampling-steps 0 is outside 1 to 1000" in error_line(result)
    assert not (tmp_path / "never.png").exists()
    result = invoke(["sample", "--run", flow_run, "--guidance-from", "0.9", "--guidance-until", "0.2", "--out",
                     tmp_path / "never.png"])
    assert error_line(result).startswith("error: --guidance-from 0.9 is after --guidance-until 0.2")
    result = invoke(["sample", "--run", flow_run, "--n", "2", "--guidance-from", "0.5", "--out", tmp_path / "i.png"])
    assert result.exit_code == 0 and (tmp_path / "i.png").is_file(), result.output
    result = invoke(["sample", "--run", flow_run, "--temperature", "0.5", "--out", tmp_path / "never.png"])
    assert "its sampling options: --guidance, --sampling-steps, --solver, --guidance-from, --guidance-until" \
        in error_line(result)


def test_a_new_flow_run_leaves_the_unnamed_attributes_to_the_model(flow_run, tmp_path):
    run = genkit.load_run(flow_run, device="cpu")
    assert run.config.model.options["attribute_dropout"] == 0.2 and run.config.conditioner.options["partial"] is True
    assert run.rest_modes == ("data", "off", "model")
    cond = run.conditions("shape::circle,-large", 2, rest="model")
    names = run.attribute_names
    expected = [1 if n == "shape::circle" else 0 if n.startswith("shape::") or n == "large" else -1 for n in names]
    assert cond.condition[0].tolist() == expected and cond.rest == "model"  # the exclusive family stated whole
    assert cond.attribute_sets == [["shape::circle"]] * 2
    images = run.sample("shape::circle,-large", n=2, seed=3, rest="model", steps=2)
    assert torch.equal(images, run.model.sample(cond.condition, run.noise(2, 3), steps=2))
    assert not torch.equal(images, run.sample("shape::circle,-large", n=2, seed=3, rest="off", steps=2))
    out = tmp_path / "model.png"
    result = invoke(["sample", "--run", flow_run, "--attrs", "shape::circle", "--n", "2", "--rest", "model",
                     "--sampling-steps", "2", "--out", out])
    assert result.exit_code == 0 and out.is_file(), result.output
    assert "(unlisted attributes left to the model)" in result.stderr


def test_composed_guidance_from_the_command_line_and_its_refusals(flow_run, tmp_path):
    out = tmp_path / "composed.png"
    result = invoke(["sample", "--run", flow_run, "--attrs", "shape::circle,large", "--rest", "model", "--n", "2",
                     "--guidance-mode", "composed", "--attribute-guidance", "large=3", "--sampling-steps", "2",
                     "--out", out])
    assert result.exit_code == 0 and out.is_file(), result.output
    result = invoke(["sample", "--run", flow_run, "--attrs", "large", "--guidance-mode", "composed",
                     "--attribute-guidance", "large=-2", "--out", tmp_path / "never.png"])
    assert result.exit_code == 2 and error_line(result).startswith(
        "error: --attribute-guidance 'large=-2': the weight must be a number from 0 to 50")
    assert not (tmp_path / "never.png").exists()


def test_vary_and_interpolate_with_the_rest_left_to_the_model(flow_run):
    from genkit.sampling import compare

    run = genkit.load_run(flow_run, device="cpu")
    names = run.attribute_names
    seen = []
    real = run.images
    run.images = lambda condition, *args: seen.append(condition) or real(condition, *args)
    varied = compare.vary(run, "large", ["shape::square"], 2, seed=1, rest="model", options={"steps": 1})
    assert varied.images.shape == (4, 3, 16, 16) and varied.attribute_sets[2:] == [["large", "shape::square"]] * 2
    upper, lower = seen
    square = names.index("shape::square")
    others = [i for i in range(len(names)) if i != square]
    assert lower[0, square] == 1 and upper[0, square] == 0 and torch.equal(upper[:, others], lower[:, others])
    assert lower[0, names.index("color::red")] == -1 and lower[0, names.index("shape::circle")] == 0
    seen.clear()
    compare.interpolate(run, ("shape::circle", "color::red,top"), 1, 3, seed=1, rest="model", options={"steps": 1})
    start, end = seen[0][0], seen[0][-1]
    stated = (start >= 0) | (end >= 0)
    assert torch.equal(start >= 0, stated) and torch.equal(end >= 0, stated)  # no entry moves out of unspecified
    assert start[names.index("color::red")] == 0 and end[names.index("shape::circle")] == 0
    assert start[names.index("large")] == -1 == end[names.index("large")]


def test_reconstruct_and_edit_a_flow_run_through_its_inverted_sampler(flow_run, tmp_path):
    run = genkit.load_run(flow_run, device="cpu")
    images, labels = genkit.load_dataset("shapes", split="test", image_size=16, count=160,
                                         seed=5).read_uint8(range(2))
    edits = run.edit(images, labels, set=["color::blue"], steps=4)
    x = images.float() / 255
    noise = run.model.invert(x, labels.float(), steps=4)
    assert torch.allclose(edits.reconstruction, run.model.sample(labels.float(), noise, steps=4), atol=1e-6)
    assert edits.edited[0].shape == x.shape
    out = tmp_path / "edits.png"
    result = invoke(["edit", "--run", flow_run, "--index", "0-1", "--set", "color::blue", "--sampling-steps", "4",
                     "--out", out])
    assert result.exit_code == 0 and out.is_file(), result.output
    # part of the way, the inversion at guidance 1: the latent at t = 0.5 drawn back with the sampling options
    partial = run.edit(images, labels, set=["color::blue"], edit_mode="redraw", edit_depth=0.5,
                       invert_options={"guidance": "1"}, steps=4)
    latent = run.model.invert_partway(x, labels.float(), 0.5, guidance=1.0, steps=4)
    assert torch.allclose(partial.edited[0], run.model.sample_partway(latent, partial.after[0], 0.5, steps=4),
                          atol=1e-6)
    result = invoke(["edit", "--run", flow_run, "--index", "0-1", "--set", "color::blue", "--sampling-steps", "4",
                     "--edit-depth", "0.5", "--invert-opt", "guidance=1", "--out", out])
    assert result.exit_code == 0 and "(redraw, depth 0.5 edits)" in " ".join(result.stderr.split())
    line = error_line(invoke(["edit", "--run", flow_run, "--index", "0", "--set", "large", "--invert-opt",
                              "guidance=99", "--out", tmp_path / "bad.png"]))
    assert "--invert-opt: --guidance 99 is outside [0, 50]" in line and not (tmp_path / "bad.png").exists()


def test_pairing_flow_with_an_elbo_or_cvae_with_flow_matching_is_refused_before_anything_is_written(tmp_path):
    for model, loss, options in (("flow", "gaussian-elbo", E2E), ("cvae", "flow-matching", E2E[:6])):
        out = tmp_path / f"{model}-{loss}"
        line = error_line(invoke(["train", "--model", model, "--loss", loss, *options, "--out", out]))
        assert loss in line and model in line
        assert not out.exists()


def test_a_resumed_flow_run_ends_bit_identical(tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert invoke(["train", "--model", "flow", *E2E, "--epochs", "2", "--out", straight]).exit_code == 0
    assert invoke(["train", "--model", "flow", *E2E, "--epochs", "1", "--out", stopped]).exit_code == 0
    result = invoke(["train", "--resume", stopped, "--epochs", "2"])
    assert result.exit_code == 0, result.output
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(stopped / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    for name in ("model.safetensors", EMA_FILE):
        a = load_file(str(latest_checkpoint(straight) / name))
        b = load_file(str(latest_checkpoint(stopped) / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.slow
def test_torchrun_with_two_gloo_processes_trains_a_flow(tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "genkit",
               "train", "--model", "flow", *E2E, "--epochs", "1", "--out", str(run)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    epoch = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert epoch["epoch"] == 1 and epoch["step"] == 16  # 128 training images, a global batch of 8
    assert math.isfinite(epoch["val_loss"]) and (run / "model.safetensors").is_file()
