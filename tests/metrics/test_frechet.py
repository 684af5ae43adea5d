"""Fréchet distance known values, and the shipped digits classifier / digits FID on real data."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
import scipy.linalg
import torch

from advtune.data.digits import load_digits_images
from advtune.metrics import (
    DigitsFrechetDistance,
    feature_statistics,
    frechet_distance,
    load_digits_classifier,
)


def _random_covariance(rng: np.random.Generator, dim: int) -> np.ndarray:
    a = rng.standard_normal((dim, dim))
    return a @ a.T + 0.1 * np.eye(dim)


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(6), _random_covariance(rng, 6)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_one_dimensional_gaussians_closed_form():
    # (μ1 − μ2)² + (σ1 − σ2)² with σ the standard deviations: (1 − 3)² + (2 − 1)² = 5.
    assert frechet_distance(1.0, 4.0, 3.0, 1.0) == pytest.approx(5.0, abs=1e-12)
    assert frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), 3.0, 1.0) == pytest.approx(5.0)


def test_diagonal_covariances_sum_per_dimension():
    # Independent dimensions: d = Σ_i (μ1_i − μ2_i)² + (s1_i − s2_i)² = (1 + 1) + (0 + 4) = 6.
    value = frechet_distance([0.0, 1.0], np.diag([1.0, 9.0]), [1.0, 1.0], np.diag([4.0, 1.0]))
    assert value == pytest.approx(6.0, abs=1e-12)


def test_general_covariances_match_the_scipy_sqrtm_formula():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    s1, s2 = _random_covariance(rng, 5), _random_covariance(rng, 5)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    reference = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-8)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_feature_statistics_mean_and_unbiased_covariance():
    features = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    mu, sigma = feature_statistics(features)
    # mean (1, 1); each variance Σ(x − 1)² / (N − 1) = 4 / 3; the coordinates are uncorrelated.
    np.testing.assert_allclose(mu, [1.0, 1.0])
    np.testing.assert_allclose(sigma, [[4 / 3, 0.0], [0.0, 4 / 3]])
    with pytest.raises(ValueError):
        feature_statistics(torch.zeros(1, 3))


@pytest.fixture(scope="module")
def digits_val() -> tuple[torch.Tensor, torch.Tensor]:
    return load_digits_images("val")


@pytest.fixture(scope="module")
def digits_fid() -> DigitsFrechetDistance:
    return DigitsFrechetDistance()


def test_shipped_classifier_is_accurate_on_the_validation_split(digits_val):
    images, labels = digits_val
    classifier = load_digits_classifier()
    logits, features = classifier(images)
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    assert accuracy > 0.95
    assert features.shape == (len(images), 64)
    assert not any(p.requires_grad for p in classifier.parameters()) and not classifier.training
    report = resources.files("advtune.metrics").joinpath("weights", "digits_classifier.json")
    assert json.loads(report.read_text())["val_accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_load_digits_classifier_returns_independent_copies_without_using_the_global_rng():
    rng_state = torch.get_rng_state()
    first, second = load_digits_classifier(), load_digits_classifier()
    assert torch.equal(torch.get_rng_state(), rng_state)  # a metric must not shift training noise
    assert first is not second
    first.head[1].weight.data.zero_()
    assert second.head[1].weight.abs().sum() > 0


def test_digits_fid_small_between_real_sets_large_for_noise(digits_val, digits_fid):
    val_images, _ = digits_val
    train_images, _ = load_digits_images("train")
    reference = digits_fid.reference_statistics(val_images)
    real_vs_real = digits_fid(train_images, reference)
    noise = torch.rand(500, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noise_vs_real = digits_fid(noise, reference)
    assert real_vs_real < 10.0  # measured 3.17
    assert noise_vs_real > 200.0  # measured 751
    assert digits_fid(train_images, val_images) == pytest.approx(real_vs_real)


def test_digits_fid_pools_16x16_images_back_to_8x8(digits_val, digits_fid):
    val_images, _ = digits_val
    upscaled = torch.nn.functional.interpolate(val_images, scale_factor=2, mode="nearest")
    assert digits_fid(upscaled, val_images) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        digits_fid(torch.zeros(4, 3, 8, 8), val_images)
