"""Classifier-free guidance (Ho & Salimans 2022) over one or more conditions, and its interval.

v = v(null) + Σᵢ wᵢ·(v(cᵢ) − v(null)). One condition with weight w is the usual joint guidance
(w = 1: the conditional velocity alone, w = 0: the unconditional one, each a single network
pass); several compose (Liu et al. 2022). Every row a velocity needs goes through the network in
one batched call, so a step costs one call however many conditions it weighs.

The guidance interval (Kynkäänniemi et al. 2024, arXiv 2404.07724) applies the weights only for
t in [low, high] and the plain conditional velocity (every weight 1: one pass for one condition,
half the cost) outside it: guidance near the noise end (t = 0) mostly costs diversity, near the
image end it does little. The default interval, [0, 1], guides every step.

Training needs the null condition learned: :func:`drop_conditions` replaces a random share of a
batch's condition vectors by the null one.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from genkit.errors import UsageError, shown
from genkit.transport.solvers import VelocityField, evaluation_times

#: ``predict(x, t, vector)``: a network's velocity for a batch, with ``t`` (B,) and ``vector`` (B, D); a network of
#: average velocities takes ``predict(x, t, vector, end)`` too, ``end`` (B,) (:mod:`genkit.transport.average`)
Predict = Callable[..., torch.Tensor]
#: guidance at every t
WHOLE_PATH = (0.0, 1.0)


def guided_velocity(predict: Predict, x: torch.Tensor, t: torch.Tensor | float, vectors: Sequence[torch.Tensor],
                    weights: Sequence[float], null: torch.Tensor | None = None,
                    end: torch.Tensor | float | None = None) -> torch.Tensor:
    """v(null) + Σᵢ wᵢ·(v(cᵢ) − v(null)) at (x, t), from one call of ``predict`` on every row it needs.

    ``vectors`` holds one (B, D) condition vector per condition, ``weights`` their scales; ``null``
    is the null condition's vector, needed unless the velocity is a single condition's at weight
    1. Conditions of weight 0 are left out of the call. With ``end``, the average velocities from t to
    ``end`` are guided the same way (``predict(x, t, vector, end)``).
    """
    kept, with_null = _rows(weights, len(vectors))
    times = _rows_of(t, x)
    extra = () if end is None else (_rows_of(end, x),)
    if not with_null:
        return predict(x, times, vectors[kept[0]], *extra)
    if null is None:
        raise ValueError(f"guidance with weights {list(weights)} needs the null condition's vector (null=...)")
    if not kept:
        return predict(x, times, null, *extra)
    rows = len(kept) + 1
    out = predict(torch.cat([x] * rows), torch.cat([times] * rows), torch.cat([vectors[i] for i in kept] + [null]),
                  *(torch.cat([e] * rows) for e in extra))
    *conditional, unconditional = out.chunk(rows)
    velocity = unconditional
    for i, v in zip(kept, conditional):
        velocity = velocity + weights[i] * (v - unconditional)
    return velocity


def guided_field(predict: Predict, vectors: Sequence[torch.Tensor], weights: Sequence[float],
                 null: torch.Tensor | None = None, *, interval: tuple[float, float] = WHOLE_PATH) -> VelocityField:
    """The velocity field ``v(x, t)`` for :func:`integrate`: :func:`guided_velocity` with ``weights`` for t in
    ``interval`` (ends included), with every weight 1 outside it. Called with an end time, as the ``mean``
    solver does, it guides the average velocities to it."""
    low, high = check_guidance_interval(*interval)
    _rows(weights, len(vectors))
    plain = [1.0] * len(weights)

    def velocity(x: torch.Tensor, t: float, end: float | None = None) -> torch.Tensor:
        return guided_velocity(predict, x, t, vectors, weights if low <= t <= high else plain, null, end)

    return velocity


def _rows_of(t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """``t`` as one time per row of ``x``: a (B,) tensor as it is, a number repeated."""
    return t if isinstance(t, torch.Tensor) else torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)


def network_passes(steps: int, solver: str = "euler", weights: Sequence[float] = (1.0,),
                   interval: tuple[float, float] = WHOLE_PATH, *, start: float = 0.0, end: float = 1.0,
                   shift: float = 1.0) -> int:
    """Network passes per sample of integrating a :func:`guided_field`: rows per sample over every velocity evaluation.

    ``network_passes(8, "euler", [2.0])`` is 16 (8 calls of two rows), ``network_passes(8, "euler", [2.0],
    (0.5, 1))`` is 12: the steps at t = 0, 1/8, 2/8 and 3/8 fall outside and take one row each.
    """
    low, high = check_guidance_interval(*interval)
    plain = [1.0] * len(weights)
    total = 0
    for t in evaluation_times(steps, solver, start=start, end=end, shift=shift):
        kept, with_null = _rows(weights if low <= t <= high else plain, len(weights))
        total += len(kept) + with_null
    return total


def check_guidance_interval(low: float, high: float, *,
                            flags: tuple[str, str] = ("--guidance-from", "--guidance-until")) -> tuple[float, float]:
    """``(low, high)`` as floats, or a one-line UsageError naming the flag at fault and a value that works."""
    for flag, value, example in zip(flags, (low, high), ("0.3", "1")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:  # NaN fails too
            raise UsageError(f"{flag} {_number(value)} must be a time from 0 (noise) to 1 (image), for example "
                             f"{flag} {example}")
    if low > high:
        raise UsageError(f"{flags[0]} {_number(low)} is after {flags[1]} {_number(high)}: guidance applies from the "
                         f"first time to the second, for example {flags[0]} 0.3 {flags[1]} 1")
    return float(low), float(high)


def drop_conditions(vector: torch.Tensor, null: torch.Tensor, probability: float, *,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """``vector`` with each row replaced by ``null``'s with ``probability``: what teaches a network the null
    condition's velocity, which guidance needs. Draws one uniform number per row."""
    dropped = torch.rand(vector.shape[0], device=vector.device, generator=generator) < probability
    return torch.where(dropped[:, None], null, vector)


def _number(value: object) -> str:
    """A number as a flag is written (``2``, ``0.25``, ``nan``), anything else as :func:`shown` shows it."""
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else shown(value)


def _rows(weights: Sequence[float], conditions: int) -> tuple[list[int], bool]:
    """Which conditions' rows a velocity with ``weights`` needs, and whether it needs the null row."""
    if len(weights) != conditions or not conditions:
        raise ValueError(f"guidance needs one weight per condition vector and at least one: "
                         f"{conditions} vectors, {len(weights)} weights")
    kept = [i for i, w in enumerate(weights) if w != 0]
    if len(kept) == 1 and weights[kept[0]] == 1:
        return kept, False
    return kept, True
