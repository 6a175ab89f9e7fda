"""The Fréchet distance between two sets of feature vectors, each summarised by a Gaussian.

    d² = ‖μ_a − μ_b‖² + tr(Σ_a) + tr(Σ_b) − 2·tr((Σ_a^½ Σ_b Σ_a^½)^½)

(tr((Σ_a Σ_b)^½) equals the last trace, whose argument is symmetric positive semi-definite, so both
square roots come from ``eigh`` in float64 with negative round-off eigenvalues set to zero: no
complex parts to discard, no scipy.) ``genkit evaluate`` applies it to the attribute classifier's
penultimate features; the figure is genkit's own, comparable only between runs judged by the same
classifier, and not the Inception-based FID of the literature.
"""

from __future__ import annotations

import torch


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Fréchet distance between feature sets ``a`` (N, F) and ``b`` (M, F), N, M ≥ 2; float64 throughout."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"need two sets of at least 2 feature vectors of one width, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    a, b = a.double().cpu(), b.double().cpu()
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _sqrt_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    distance = (mean_a - mean_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * trace_root
    return max(0.0, float(distance))
