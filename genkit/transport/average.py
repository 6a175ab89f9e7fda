"""Average velocities over an interval of the path (MeanFlow, Geng et al. 2025, arXiv 2505.13447).

A flow's network learns the velocity v(x_t, t) and sampling integrates it in many small steps. A
network that also takes an end time e learns the *average* velocity from t to e along the flow,
u(x_t, t, e) = 1/(e − t) ∫ₜᵉ v(x_τ, τ) dτ, and a sample then jumps x_e = x_t + (e − t)·u(x_t, t, e)
in one evaluation: 1 to 4 of them give an image (the ``mean`` solver of :func:`integrate`).

Training needs no ODE: differentiating (e − t)·u = ∫ₜᵉ v along the path gives the MeanFlow identity
u = v + (e − t)·du/dt with du/dt = ∂ₓu·v + ∂ₜu, one forward-mode product (``torch.func.jvp``) of the
network along the path's velocity. The target is that right-hand side with its gradient stopped; for
e = t it is the flow-matching target v itself, so a share of rows with e = t keeps the instantaneous
velocity learned (the paper's best share of e ≠ t is a quarter).
"""

from __future__ import annotations

from typing import Callable

import torch

from genkit.errors import UsageError, shown
from genkit.transport.path import PathPoint, draw_times, straight_path

#: ``average(x, t, end)``: a network's average velocity for a batch, ``t`` and ``end`` (B,)
Average = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def check_interval_share(share: float, *, name: str = "interval share") -> float:
    """``share`` as a float in [0, 1), or a one-line UsageError naming ``name``."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:  # NaN fails
        raise UsageError(f"{name} {shown(share)} must be a number from 0 to under 1: the share of training points "
                         "whose end time is drawn after their time (0: plain flow matching; 0.25 as MeanFlow)")
    return float(share)


def draw_interval(point: PathPoint, x1: torch.Tensor, share: float, time_sampling: str = "logit-normal", *,
                  generator: torch.Generator | None = None, shift: float = 1.0) -> tuple[PathPoint, torch.Tensor]:
    """``point`` moved to an interval of the path: for a ``share`` of rows a second time is drawn as
    :func:`draw_times` draws and the row's point goes to the earlier of the two, its end time to the
    later; the other rows keep their point and end where they start. Returns the point and the (B,) ends.

    Draws (after ``point``'s own): the second times, then one uniform per row, from torch's global
    random state or ``generator``.
    """
    check_interval_share(share)
    other = draw_times(point.t.shape[0], time_sampling, device=point.t.device, dtype=point.t.dtype,
                       generator=generator, shift=shift)
    chosen = torch.rand(point.t.shape[0], generator=generator,
                        device=point.t.device if generator is None else generator.device).to(point.t.device) < share
    start = torch.where(chosen, torch.minimum(point.t, other), point.t)
    end = torch.where(chosen, torch.maximum(point.t, other), point.t)
    moved = PathPoint(t=start, noise=point.noise, x_t=straight_path(point.noise, x1, start), target=point.target)
    return moved, end


def average_velocity_target(average: Average, point: PathPoint, end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's average velocity u(x_t, t, end) at ``point`` and its MeanFlow target, v + (end − t)·du/dt.

    du/dt along the path is one forward-mode product of ``average`` in (x, t) along (v, 1), v the path's
    velocity ``point.target``; the target carries no gradient, the prediction does. Where end = t the
    target is v. A network whose layers lack forward-mode derivatives fails here with torch's error.
    """
    def along_path(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return average(x, t, end)

    u, du_dt = torch.func.jvp(along_path, (point.x_t, point.t), (point.target, torch.ones_like(point.t)))
    gap = (end - point.t).reshape(-1, *[1] * (u.dim() - 1))
    return u, (point.target + gap * du_dt).detach()
