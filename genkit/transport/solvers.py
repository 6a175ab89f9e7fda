"""ODE solvers for dx/dt = v(x, t) on [0, 1]: forwards (noise to image) or backwards (image to noise).

A velocity field is any ``velocity(x, t) -> Tensor`` with ``t`` a Python float; the solvers call
it in order and nothing else (so a guided field decides per call how many network passes it
spends). ``steps`` equal steps cover [start, end]: the whole path by default, or part of it, as an
edit that starts from an image noised to a time ``s`` and integrates [s, 1] needs. With a time
``shift`` (:func:`genkit.transport.path.shift_times`) the steps are equal before the shift, so more of
them fall near the noise, where a model trained with the same shift decides an image's layout.

The ``mean`` solver is for a field of average velocities (:mod:`genkit.transport.average`): it calls
``velocity(x, t, t_next)`` and jumps ``x + (t_next − t)·u``, one evaluation a step; backwards it takes
Euler's steps of the instantaneous velocity ``velocity(x, t)`` (an average velocity is learned only
forwards in time).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from genkit.errors import UsageError, shown
from genkit.transport.path import check_shift, shift_times

#: solver -> velocity evaluations per step: Euler's method, Heun's (Euler's guess, then the trapezoid), and
#: the jump by the average velocity to the next time (a field that takes an end time)
SOLVERS = {"euler": 1, "heun": 2, "mean": 1}

#: ``velocity(x, t)``, and ``velocity(x, t, end)`` for the ``mean`` solver: the average velocity from t to end
VelocityField = Callable[..., torch.Tensor]


def integrate(velocity: VelocityField, x: torch.Tensor, steps: int, solver: str = "euler", *,
              start: float = 0.0, end: float = 1.0, backwards: bool = False, shift: float = 1.0) -> torch.Tensor:
    """``x`` carried along dx/dt = ``velocity(x, t)`` from t = ``start`` to ``end`` in ``steps`` steps, equal
    ones before a time ``shift`` (1: none) moves them toward the noise.

    ``backwards`` runs from ``end`` to ``start`` instead: the same steps at the same times in
    reverse, so that integrating an image backwards gives the noise a forward run maps back to it
    (exactly only as the steps get small). An empty range (``start == end``) returns ``x``.
    """
    grid = _grid(steps, solver, start, end, shift)
    if backwards:
        grid.reverse()
    heun, jump = solver == "heun", solver == "mean" and not backwards
    for t, t_next in zip(grid[:-1], grid[1:]):
        h = t_next - t
        v = velocity(x, t, t_next) if jump else velocity(x, t)
        if heun:
            v_next = velocity(x + h * v, t_next)
            v = (v + v_next) / 2
        x = x + h * v
    return x


def evaluation_times(steps: int, solver: str = "euler", *, start: float = 0.0, end: float = 1.0,
                     backwards: bool = False, shift: float = 1.0) -> list[float]:
    """The times at which :func:`integrate` calls the velocity field, in order (found by running it)."""
    times: list[float] = []

    def record(x: torch.Tensor, t: float, end: float | None = None) -> torch.Tensor:
        times.append(t)
        return x

    integrate(record, torch.zeros(()), steps, solver, start=start, end=end, backwards=backwards, shift=shift)
    return times


def _grid(steps: int, solver: str, start: float, end: float, shift: float = 1.0) -> list[float]:
    """``steps + 1`` times from ``start`` to ``end``, equally spaced before ``shift``; a one-line UsageError for
    bad arguments."""
    if solver not in SOLVERS:
        raise UsageError(f"solver {shown(solver)} is not known; choose one of: {', '.join(SOLVERS)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UsageError(f"steps {shown(steps)} must be a whole number of 1 or more, for example 8")
    for name, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0 <= value <= 1:
            raise UsageError(f"{name} {shown(value)} must be a time from 0 (noise) to 1 (image)")
    if start > end:
        raise UsageError(f"start {shown(start)} is after end {shown(end)}; integrate from the earlier time, and "
                         "give backwards=True to run from end to start")
    start, end, shift = float(start), float(end), check_shift(shift)
    if start == end:
        return [start]
    if shift == 1:
        return [start + (end - start) * i / steps for i in range(steps)] + [end]
    low, high = _unshift(start, shift), _unshift(end, shift)  # equal steps between the unshifted ends
    return [start] + [shift_times(low + (high - low) * i / steps, shift) for i in range(1, steps)] + [end]


def _unshift(t: float, shift: float) -> float:
    """The time that :func:`shift_times` moves to ``t``: shift·t / (1 + (shift − 1)·t)."""
    return shift * t / (1 + (shift - 1) * t)
