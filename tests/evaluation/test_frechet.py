"""The Fréchet distance of ``genkit evaluate``: zero for a set against itself, the closed form for
Gaussians with diagonal covariances, growth with a shift, and the classifier's features contract."""

from __future__ import annotations

import pytest
import torch

import genkit
from genkit.evaluation.classifier import features_of
from genkit.evaluation.frechet import frechet_distance


def _features(n: int = 2000, width: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(width, width, generator=g) / width ** 0.5
    return torch.randn(n, width, generator=g, dtype=torch.float64) @ mixing.double() + 0.3


def test_a_set_against_itself_is_zero():
    a = _features()
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    singular = torch.cat([a[:, :8], torch.zeros(len(a), 8, dtype=torch.float64)], dim=1)  # dead ReLU units
    assert frechet_distance(singular, singular) == pytest.approx(0.0, abs=1e-8)


def test_it_grows_with_a_shift_as_the_squared_mean_difference():
    a = _features()
    distances = [frechet_distance(a, a + shift) for shift in (0.1, 0.5, 1.0, 2.0)]
    assert distances == sorted(distances) and distances[0] > 0
    for shift, d in zip((0.1, 0.5, 1.0, 2.0), distances):
        assert d == pytest.approx(16 * shift ** 2, rel=1e-6)  # same covariance: only ‖Δμ‖² remains


def test_it_matches_the_closed_form_for_diagonal_gaussians():
    g = torch.Generator().manual_seed(1)
    n = 400_000
    a = torch.randn(n, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    b = torch.randn(n, 3, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64) + 1
    # ‖Δμ‖² + Σ (σ_a − σ_b)² for diagonal covariances
    expected = 3 * 1.0 + (1 - 3) ** 2 + (2 - 1) ** 2 + 0
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)


def test_it_refuses_sets_it_cannot_compare():
    with pytest.raises(ValueError):
        frechet_distance(torch.zeros(1, 4), torch.zeros(5, 4))
    with pytest.raises(ValueError):
        frechet_distance(torch.zeros(5, 4), torch.zeros(5, 3))


def test_small_cnn_features_are_its_penultimate_layer_and_a_classifier_without_them_gives_none():
    classifier = genkit.registry("classifiers").get("small-cnn").create((3, 16, 16), ["a", "b"]).eval()
    images = torch.rand(5, 3, 16, 16)
    features = features_of(classifier, images, torch.device("cpu"))
    assert features.shape == (5, 128) and features.dtype == torch.float64 and (features >= 0).all()
    with torch.no_grad():
        assert torch.allclose(classifier.head(features.float()), classifier(images), atol=1e-6)
    assert features_of(torch.nn.Linear(3, 2), images) is None
