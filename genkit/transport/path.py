"""The straight path from noise x₀ ~ N(0, I) at t = 0 to data x₁ at t = 1: x_t = t·x₁ + (1 − t)·x₀.

Its velocity is x₁ − x₀, the same at every t (the flow-matching target; Lipman et al. 2023,
Liu et al. 2023). Training draws t, then the noise, from torch's random state (or ``generator``),
so a seeded run draws the same points and a resumed run continues them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genkit.errors import UsageError, shown

#: how training draws t: ``logit-normal`` puts more of it in the middle of the path (Esser et al. 2024)
TIME_SAMPLINGS = ("logit-normal", "uniform")
#: the standard deviation assumed of image values in [−1, 1] (EDM's σ_data)
DATA_STD = 0.5


@dataclass
class PathPoint:
    """One random point per image on its straight path: the time, the noise, x_t and the velocity there."""

    t: torch.Tensor  #: (B,) times in [0, 1]
    noise: torch.Tensor  #: x₀, the shape of x₁
    x_t: torch.Tensor  #: t·x₁ + (1 − t)·x₀
    target: torch.Tensor  #: x₁ − x₀, the path's velocity


def shift_times(t, shift: float = 1.0):
    """Times moved toward the noise by ``shift`` (Esser et al. 2024, SD3's resolution shift): t / (t + shift·(1 − t)).

    An image of more pixels keeps its coarse layout visible through more noise (its signal-to-noise
    ratio at a scale grows with the pixels averaged), so the times where the layout is decided move
    toward t = 0; a shift of k gives the noise k times the weight, which for an image of twice the
    side is k = 2 (the layout is then decided as at the smaller size). ``shift`` 1 leaves ``t`` as it
    is; ``t`` is a tensor or a number, and 0 and 1 stay where they are.
    """
    check_shift(shift)
    if shift == 1:
        return t
    return t / (t + shift * (1 - t))


def check_shift(shift: float) -> float:
    """``shift`` as a float, or a one-line UsageError: it must be a finite number of at least 1."""
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not 1 <= shift < float("inf"):
        raise UsageError(f"time shift {shown(shift)} must be a number of 1 or more (1: no shift; 2 for an image of "
                         "twice the side of the one a schedule was made for)")
    return float(shift)


def draw_times(n: int, time_sampling: str = "logit-normal", *, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None, generator: torch.Generator | None = None,
               shift: float = 1.0) -> torch.Tensor:
    """``n`` times in [0, 1]: sigmoid of N(0, 1) draws (``logit-normal``) or U(0, 1) (``uniform``), then
    moved toward the noise by ``shift`` (:func:`shift_times`)."""
    if time_sampling == "logit-normal":
        return shift_times(torch.sigmoid(torch.randn(n, generator=generator, device=device, dtype=dtype)), shift)
    if time_sampling == "uniform":
        return shift_times(torch.rand(n, generator=generator, device=device, dtype=dtype), shift)
    raise UsageError(f"time sampling {shown(time_sampling)} is not known; choose one of: {', '.join(TIME_SAMPLINGS)}")


def straight_path(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """x_t = t·x₁ + (1 − t)·x₀, with ``t`` a number or one time per row."""
    tt = _per_row(t, x1)
    return tt * x1 + (1 - tt) * x0


def draw_path(x1: torch.Tensor, time_sampling: str = "logit-normal", *,
              generator: torch.Generator | None = None, shift: float = 1.0) -> PathPoint:
    """A training point for each row of data ``x1``: t drawn first (moved by ``shift``, :func:`shift_times`),
    then the noise, then x_t and x₁ − x₀."""
    t = draw_times(x1.shape[0], time_sampling, device=x1.device, dtype=x1.dtype, generator=generator, shift=shift)
    x0 = torch.empty_like(x1).normal_(generator=generator)  # what randn_like draws, with a generator allowed
    return PathPoint(t=t, noise=x0, x_t=straight_path(x0, x1, t), target=x1 - x0)


def preconditioned(network, x: torch.Tensor, t: torch.Tensor, *inputs, data_std: float = DATA_STD) -> torch.Tensor:
    """The velocity at (x, t) from ``network(x / std_t, t, *inputs)``, preconditioned as EDM does (Karras et al. 2022).

    On the straight path Var(x_t) = (t·σ)² + (1 − t)² for data of standard deviation σ = ``data_std``:
    the network sees x_t scaled to unit variance, and its output, scaled by σ / std_t, corrects
    the best linear guess of the velocity from x_t, (t·σ² − (1 − t)) / Var(x_t) · x_t. So its input
    and output stay near unit scale at every t, which a network predicting v directly does not
    have (v ≈ −x₀ at t = 0, a data-sized difference at t = 1).
    """
    tt = _per_row(t, x)
    spread = (tt * data_std) ** 2 + (1 - tt) ** 2
    skip = (tt * data_std ** 2 - (1 - tt)) / spread
    return skip * x + data_std / spread.sqrt() * network(x / spread.sqrt(), t, *inputs)


def _per_row(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor | float:
    """``t`` shaped to broadcast over ``like``'s rows: (B,) -> (B, 1, 1, ...); a number as it is."""
    if isinstance(t, torch.Tensor) and t.dim() == 1:
        return t.reshape(-1, *[1] * (like.dim() - 1))
    return t
