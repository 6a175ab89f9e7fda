"""``genkit.plugin_api``'s transport: the straight path, the solvers and guidance, against hand computations
on toy velocities, with the network passes they cost and their one-line refusals of bad input."""

from __future__ import annotations

import math

import pytest
import torch

import genkit
from genkit.plugin_api import (SOLVERS, TIME_SAMPLINGS, PathPoint, average_velocity_target, check_guidance_interval,
                               check_interval_share, draw_interval, draw_path, draw_times, drop_conditions,
                               guided_field, guided_velocity, integrate, network_passes, preconditioned,
                               shift_times, straight_path)
from genkit.transport.solvers import evaluation_times


def toy(x: torch.Tensor, t: float) -> torch.Tensor:
    """v(x, t) = −x/2 + t: linear in x, so each step is a hand computation."""
    return -x / 2 + t


class Recorder:
    """A toy network v(x, t, y) = y₀ − x/4 + t (per row), recording the rows of every call."""

    def __init__(self):
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __call__(self, x, t, vector):
        self.calls.append((x.clone(), t.clone(), vector.clone()))
        return vector[:, :1, None, None] - x / 4 + t[:, None, None, None]

    def rows(self) -> list[int]:
        return [len(vector) for _, _, vector in self.calls]


X = torch.tensor([[[[0.5, -1.0]]], [[[2.0, 0.25]]]])  # (2, 1, 1, 2)


# --- solvers ----------------------------------------------------------------------------------------------

def test_euler_forwards_takes_equal_steps_from_noise_to_image():
    first = X + 0.5 * toy(X, 0.0)
    expected = first + 0.5 * toy(first, 0.5)
    assert torch.equal(integrate(toy, X, 2, "euler"), expected)
    assert SOLVERS == {"euler": 1, "heun": 2, "mean": 1}


def test_heun_averages_the_velocity_at_both_ends_of_the_step():
    v0 = toy(X, 0.0)
    v1 = toy(X + 1.0 * v0, 1.0)
    assert torch.equal(integrate(toy, X, 1, "heun"), X + 1.0 * ((v0 + v1) / 2))
    assert evaluation_times(2, "heun") == [0.0, 0.5, 0.5, 1.0]


def test_backwards_runs_the_same_times_in_reverse():
    first = X + -0.5 * toy(X, 1.0)
    expected = first + -0.5 * toy(first, 0.5)
    assert torch.equal(integrate(toy, X, 2, "euler", backwards=True), expected)
    assert evaluation_times(2, "heun", backwards=True) == [1.0, 0.5, 0.5, 0.0]
    for solver, steps, tolerance in (("euler", 400, 1e-2), ("heun", 40, 1e-5)):  # back to the start as h -> 0
        there = integrate(toy, X, steps, solver)
        assert (integrate(toy, there, steps, solver, backwards=True) - X).abs().max() < tolerance
        assert (integrate(toy, there, 1, solver, backwards=True) - X).abs().max() > 10 * tolerance


def test_a_time_shift_moves_the_steps_and_the_training_times_toward_the_noise():
    """shift k: t / (t + k·(1 − t)); steps equal before the shift, the ends kept exactly."""
    assert shift_times(0.5, 2.0) == pytest.approx(1 / 3) and shift_times(0.5, 1.0) == 0.5
    assert evaluation_times(2, "euler", shift=3.0) == [0.0, pytest.approx(0.5 / (0.5 + 3 * 0.5))]
    times = evaluation_times(4, "euler", start=0.5, end=0.9, shift=2.0)
    unshifted = [2 * t / (1 + t) for t in (0.5, 0.9)]  # where shift 2 puts 0.5 and 0.9 before the shift
    assert times == [0.5] + [pytest.approx(shift_times(unshifted[0] + (unshifted[1] - unshifted[0]) * i / 4, 2.0))
                             for i in (1, 2, 3)]
    first = X + (1 / 3) * toy(X, 0.0)
    assert torch.equal(integrate(toy, X, 2, "euler", shift=2.0), first + (2 / 3) * toy(first, 1 / 3))
    forwards = evaluation_times(3, "heun", shift=2.0)
    assert evaluation_times(3, "heun", shift=2.0, backwards=True) == forwards[::-1]
    torch.manual_seed(0)
    plain = draw_times(20000)
    torch.manual_seed(0)
    assert torch.allclose(draw_times(20000, shift=2.0), plain / (plain + 2 * (1 - plain)))
    for bad in (0.5, float("nan"), float("inf"), True, "2"):
        with pytest.raises(genkit.UsageError, match=r"time shift .* must be a number of 1 or more"):
            integrate(toy, X, 2, shift=bad)


def test_part_of_the_range_is_covered_in_the_steps_given():
    assert evaluation_times(2, "euler", start=0.5) == [0.5, 0.75]
    assert evaluation_times(2, "euler", start=0.5, backwards=True) == [1.0, 0.75]
    first = X + 0.25 * toy(X, 0.5)
    assert torch.equal(integrate(toy, X, 2, "euler", start=0.5), first + 0.25 * toy(first, 0.75))
    assert evaluation_times(4, "heun", start=0.2, end=0.6)[-1] == 0.6  # the end exactly, not 0.2 + 0.4
    calls = []
    assert integrate(lambda x, t: calls.append(t) or x, X, 3, start=1.0) is X and calls == []  # an empty range


@pytest.mark.parametrize("kwargs, message", [
    ({"solver": "rk4"}, "solver 'rk4' is not known; choose one of: euler, heun"),
    ({"steps": 0}, "steps 0 must be a whole number of 1 or more"),
    ({"steps": 2.5}, "steps 2.5 must be a whole number of 1 or more"),
    ({"steps": True}, "steps True must be a whole number of 1 or more"),
    ({"start": -0.1}, "start -0.1 must be a time from 0 (noise) to 1 (image)"),
    ({"end": math.nan}, "end nan must be a time from 0 (noise) to 1 (image)"),
    ({"end": math.inf}, "end inf must be a time from 0 (noise) to 1 (image)"),
    ({"start": 0.8, "end": 0.2}, "start 0.8 is after end 0.2; integrate from the earlier time"),
])
def test_bad_solver_arguments_are_refused_in_one_line(kwargs, message):
    arguments = {"steps": 4, "solver": "euler", **kwargs}
    with pytest.raises(genkit.UsageError) as caught:
        integrate(toy, X, arguments.pop("steps"), arguments.pop("solver"), **arguments)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


# --- guidance ---------------------------------------------------------------------------------------------

CONDITION = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
def average_toy(x: torch.Tensor, t: float, end: float | None = None) -> torch.Tensor:
    """u(x, t, e) = −x/2 + t + 3·(e − t), or the toy velocity without an end."""
    return toy(x, t) + (0.0 if end is None else 3 * (end - t))


def test_the_mean_solver_jumps_by_the_average_velocity_to_the_next_time():
    first = X + 0.5 * average_toy(X, 0.0, 0.5)
    expected = first + 0.5 * average_toy(first, 0.5, 1.0)
    assert torch.equal(integrate(average_toy, X, 2, "mean"), expected)
    assert evaluation_times(2, "mean") == [0.0, 0.5]
    assert network_passes(2, "mean", [2.0]) == 4
    # backwards an average velocity is not learned: Euler's steps of the velocity itself
    assert torch.equal(integrate(average_toy, X, 2, "mean", backwards=True), integrate(toy, X, 2, "euler",
                                                                                      backwards=True))


def test_guided_average_velocities_pass_the_end_time_to_the_network_with_every_row():
    calls = []

    def net(x, t, vector, end):
        calls.append(end.clone())
        return vector[:, :1, None, None] - x / 4 + t[:, None, None, None] + end[:, None, None, None]

    field = guided_field(net, [CONDITION], [2.0], NULL)
    out = field(X, 0.25, 0.75)
    conditional = CONDITION[:, :1, None, None] - X / 4 + 1.0
    unconditional = -X / 4 + 1.0
    assert torch.allclose(out, unconditional + 2.0 * (conditional - unconditional))
    assert len(calls) == 1 and torch.equal(calls[0], torch.full((4,), 0.75))


def test_an_interval_draws_a_share_of_rows_from_an_earlier_to_a_later_time():
    torch.manual_seed(0)
    x1 = torch.randn(4000, 1, 1, 1)
    point = draw_path(x1)
    moved, end = draw_interval(point, x1, 0.25)
    assert ((end - moved.t) > 0).float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert torch.all(end >= moved.t) and torch.all(moved.t <= point.t)
    assert torch.equal(moved.x_t, straight_path(point.noise, x1, moved.t)) and moved.target is point.target
    kept, kept_end = draw_interval(point, x1, 0.0)
    assert torch.equal(kept.t, point.t) and torch.equal(kept_end, point.t)


def test_the_mean_flow_target_is_the_velocity_plus_the_gap_times_the_derivative_along_the_path():
    """For u(x, t, e) = a·x + b·t + c·e, du/dt along the path (dx/dt = v) is a·v + b: the target is
    v + (e − t)·(a·v + b), the prediction u itself; where e = t the target is v."""
    a, b, c = 0.5, -2.0, 3.0
    weight = torch.tensor(a, requires_grad=True)

    def average(x, t, e):
        return weight * x + b * t[:, None, None, None] + c * e[:, None, None, None]

    x1, x0 = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    t, end = torch.tensor([0.2, 0.5, 0.7]), torch.tensor([0.6, 0.5, 1.0])
    point = PathPoint(t=t, noise=x0, x_t=straight_path(x0, x1, t), target=x1 - x0)
    u, target = average_velocity_target(average, point, end)
    gap = (end - t)[:, None, None, None]
    assert torch.allclose(u, average(point.x_t, t, end))
    assert torch.allclose(target, point.target + gap * (a * point.target + b))
    assert torch.equal(target[1], point.target[1]) and not target.requires_grad
    u.sum().backward()
    assert weight.grad is not None  # the prediction trains the network


@pytest.mark.parametrize("share", [1.0, -0.1, float("nan"), True, "0.2"])
def test_a_bad_interval_share_is_refused_in_one_line(share):
    with pytest.raises(genkit.UsageError, match=r"must be a number from 0 to under 1"):
        check_interval_share(share)


OTHER = torch.tensor([[-2.0, 0.0], [0.5, 0.0]])
NULL = torch.tensor([[0.0, 1.0], [0.0, 1.0]])


@pytest.mark.parametrize("weight, rows", [(2.5, [CONDITION, NULL]), (1.0, [CONDITION]), (0.0, [NULL])])
def test_guidance_is_the_null_velocity_plus_w_times_the_difference_in_one_call(weight, rows):
    net = Recorder()
    out = guided_velocity(net, X, 0.25, [CONDITION], [weight], NULL)
    conditional = CONDITION[:, :1, None, None] - X / 4 + 0.25
    unconditional = -X / 4 + 0.25
    assert torch.allclose(out, unconditional + weight * (conditional - unconditional))
    assert len(net.calls) == 1  # every row the velocity needs in one batched call
    x, t, vector = net.calls[0]
    assert torch.equal(vector, torch.cat(rows)) and torch.equal(x, torch.cat([X] * len(rows)))
    assert torch.equal(t, torch.full((2 * len(rows),), 0.25))


def test_several_conditions_compose_in_one_call_and_weight_zero_leaves_a_condition_out():
    net = Recorder()
    out = guided_velocity(net, X, 0.5, [CONDITION, OTHER], [2.0, 0.5], NULL)
    v = {name: c[:, :1, None, None] - X / 4 + 0.5 for name, c in (("a", CONDITION), ("b", OTHER), ("null", NULL))}
    assert torch.allclose(out, v["null"] + 2.0 * (v["a"] - v["null"]) + 0.5 * (v["b"] - v["null"]))
    assert net.rows() == [6]
    guided_velocity(net, X, 0.5, [CONDITION, OTHER], [0.0, 3.0], NULL)
    assert torch.equal(net.calls[-1][2], torch.cat([OTHER, NULL]))
    assert torch.allclose(guided_velocity(net, X, 0.5, [CONDITION, OTHER], [0.0, 1.0], NULL), v["b"])
    assert net.rows()[-1] == 2  # the other condition alone, as trained
    with pytest.raises(ValueError, match="null condition's vector"):
        guided_velocity(net, X, 0.5, [CONDITION], [2.0])
    with pytest.raises(ValueError, match="one weight per condition vector"):
        guided_velocity(net, X, 0.5, [CONDITION, OTHER], [2.0], NULL)


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_outside_the_guidance_interval_each_evaluation_is_one_conditional_pass(solver):
    net = Recorder()
    field = guided_field(net, [CONDITION], [2.0], NULL, interval=(0.25, 0.5))
    integrate(field, X, 8, solver)
    times = evaluation_times(8, solver)
    assert net.rows() == [4 if 0.25 <= t <= 0.5 else 2 for t in times]  # two images: one row each, or two
    assert all(torch.equal(vector, CONDITION) for _, _, vector in net.calls if len(vector) == 2)
    assert sum(net.rows()) // 2 == network_passes(8, solver, [2.0], (0.25, 0.5))
    whole = Recorder()
    assert torch.equal(integrate(guided_field(whole, [CONDITION], [2.0], NULL), X, 8, solver),
                       integrate(guided_field(whole, [CONDITION], [2.0], NULL, interval=(0.0, 1.0)), X, 8, solver))
    assert set(whole.rows()) == {4}


def test_network_passes_per_sample():
    assert network_passes(8) == 8 and network_passes(8, "heun") == 16
    assert network_passes(8, "euler", [2.0]) == 16 and network_passes(8, "heun", [2.0]) == 32
    assert network_passes(8, "euler", [0.0]) == 8  # the unconditional velocity alone
    assert network_passes(8, "euler", [2.0], (0.5, 1.0)) == 12  # t = 0, 1/8, 2/8, 3/8 outside
    assert network_passes(8, "euler", [2.0, 0.5]) == 24 and network_passes(8, "euler", [2.0, 0.0]) == 16
    assert network_passes(4, "euler", [2.0], start=0.5) == 8
    assert network_passes(4, "euler", [2.0], (0.0, 0.0)) == 5  # only the first evaluation, at t = 0


@pytest.mark.parametrize("low, high, message", [
    (1.5, 1.0, "--guidance-from 1.5 must be a time from 0 (noise) to 1 (image), for example --guidance-from 0.3"),
    (0.0, -0.1, "--guidance-until -0.1 must be a time from 0 (noise) to 1 (image), for example --guidance-until 1"),
    (math.nan, 1.0, "--guidance-from nan must be a time from 0 (noise) to 1 (image)"),
    (0.0, math.inf, "--guidance-until inf must be a time from 0 (noise) to 1 (image)"),
    (True, 1.0, "--guidance-from True must be a time"),
    ("0.5", 1.0, "--guidance-from '0.5' must be a time"),
    (0.8, 0.3, "--guidance-from 0.8 is after --guidance-until 0.3: guidance applies from the first time to the "
               "second, for example --guidance-from 0.3 --guidance-until 1"),
])
def test_a_bad_guidance_interval_is_refused_in_one_line_with_a_flag_that_works(low, high, message):
    with pytest.raises(genkit.UsageError) as caught:
        check_guidance_interval(low, high)
    assert str(caught.value) == message or str(caught.value).startswith(message)
    assert "\n" not in str(caught.value) and caught.value.exit_code == 2
    with pytest.raises(genkit.UsageError):
        guided_field(Recorder(), [CONDITION], [2.0], NULL, interval=(low, high))


def test_the_interval_check_names_a_models_own_flags():
    with pytest.raises(genkit.UsageError, match="^--cfg-start 2 must be a time"):
        check_guidance_interval(2, 1, flags=("--cfg-start", "--cfg-end"))
    assert check_guidance_interval(0, 1) == (0.0, 1.0)


def test_condition_dropout_replaces_about_its_share_of_rows_by_the_null_vector():
    vector, null = torch.ones(1000, 3), torch.zeros(1000, 3)
    assert torch.equal(drop_conditions(vector, null, 0.0), vector)
    assert torch.equal(drop_conditions(vector, null, 1.0), null)
    dropped = drop_conditions(vector, null, 0.25, generator=torch.Generator().manual_seed(0))
    assert 200 < int((dropped == 0).all(dim=1).sum()) < 300
    assert torch.equal(dropped, drop_conditions(vector, null, 0.25, generator=torch.Generator().manual_seed(0)))


# --- the path ---------------------------------------------------------------------------------------------

def test_time_samplings_lie_in_the_unit_interval_logit_normal_more_in_the_middle():
    assert TIME_SAMPLINGS == ("logit-normal", "uniform")
    middle = {}
    for name in TIME_SAMPLINGS:
        t = draw_times(20000, name, generator=torch.Generator().manual_seed(0))
        assert t.shape == (20000,) and 0 < t.min() and t.max() < 1
        assert abs(float(t.mean()) - 0.5) < 0.01  # both symmetric about 1/2
        middle[name] = float(((t > 0.25) & (t < 0.75)).float().mean())
    assert abs(middle["uniform"] - 0.5) < 0.02
    assert abs(middle["logit-normal"] - 0.728) < 0.02  # P(|z| < ln 3) for z ~ N(0, 1)
    torch.manual_seed(4)
    drawn = draw_times(5, dtype=torch.float64)
    torch.manual_seed(4)
    assert torch.equal(drawn, torch.sigmoid(torch.randn(5, dtype=torch.float64)))  # the global random state
    with pytest.raises(genkit.UsageError, match="time sampling 'cosine' is not known; choose one of: logit-normal, "
                                                "uniform"):
        draw_times(3, "cosine")


def test_a_path_point_draws_the_time_then_the_noise():
    x1 = torch.rand(3, 2, 4, 4) * 2 - 1
    point = draw_path(x1, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(1)
    t = torch.sigmoid(torch.randn(3, generator=generator))
    x0 = torch.randn(3, 2, 4, 4, generator=generator)
    assert isinstance(point, PathPoint)
    assert torch.equal(point.t, t) and torch.equal(point.noise, x0)
    assert torch.equal(point.x_t, t[:, None, None, None] * x1 + (1 - t[:, None, None, None]) * x0)
    assert torch.equal(point.target, x1 - x0)
    torch.manual_seed(2)
    global_draw = draw_path(x1, "uniform")
    torch.manual_seed(2)
    assert torch.equal(global_draw.t, torch.rand(3)) and torch.equal(global_draw.noise, torch.randn_like(x1))
    assert torch.equal(straight_path(x0, x1, 0.0), x0) and torch.equal(straight_path(x0, x1, 1.0), x1)


def test_preconditioning_corrects_the_best_linear_guess_with_the_scaled_network():
    seen = []

    def network(x, t, vector):
        seen.append(x)
        return torch.ones_like(x) * vector[:, :1, None, None]

    x, t, vector = torch.randn(2, 1, 2, 2), torch.tensor([0.0, 1.0]), torch.tensor([[1.0], [2.0]])
    out = preconditioned(network, x, t, vector)
    assert torch.allclose(seen[0], torch.cat([x[:1], x[1:] / 0.5]))  # Var(x_t): 1 at t = 0, σ² = 1/4 at t = 1
    assert torch.allclose(out[0], -x[0] + 0.5 * 1.0)  # pure noise: v = x₁ − x₀ guessed as −x
    assert torch.allclose(out[1], x[1] + 1.0 * 2.0)  # the data itself: the guess x·σ²/σ², the network scaled by 1
