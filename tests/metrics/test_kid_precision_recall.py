"""Known values of KID (unbiased MMD², cubic polynomial kernel) and of improved precision/recall."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advtune.metrics import (
    feature_statistics,
    frechet_distance,
    kernel_inception_distance,
    knn_radii,
    mmd2_unbiased,
    polynomial_kernel,
    precision_recall,
)


def test_polynomial_kernel_value():
    x, y = np.array([[1.0, 2.0]]), np.array([[3.0, -1.0], [0.0, 0.0]])
    # (x·y / d + 1)^3 with d = 2: (1/2 + 1)^3 = 3.375 and (0 + 1)^3 = 1.
    np.testing.assert_allclose(polynomial_kernel(x, y), [[3.375, 1.0]])


def test_mmd2_unbiased_hand_computed():
    # d = 1, k = (xy + 1)^3. Within X = {0, 1}: k(0,1) = 1. Within Y = {2, 3}: k(2,3) = 7^3 = 343.
    # Across: k(0,2) = k(0,3) = 1, k(1,2) = 27, k(1,3) = 64, mean 93/4. MMD² = 1 + 343 − 2·23.25 = 297.5.
    x, y = np.array([[0.0], [1.0]]), np.array([[2.0], [3.0]])
    assert mmd2_unbiased(x, y) == pytest.approx(297.5)
    mean, std = kernel_inception_distance(x, y, num_subsets=5, subset_size=2)
    assert mean == pytest.approx(297.5) and std == pytest.approx(0.0)  # every subset is the whole set


def test_mmd2_unbiased_has_zero_mean_for_one_distribution():
    rng = np.random.default_rng(0)
    unbiased, biased = [], []
    for _ in range(400):
        x, y = rng.standard_normal((8, 3)), rng.standard_normal((8, 3))
        unbiased.append(mmd2_unbiased(x, y))
        biased.append(polynomial_kernel(x, x).mean() + polynomial_kernel(y, y).mean() - 2 * polynomial_kernel(x, y).mean())
    standard_error = np.std(unbiased) / np.sqrt(len(unbiased))
    assert abs(np.mean(unbiased)) < 3 * standard_error  # E[MMD²_u] = 0: small sets do not bias it
    assert np.mean(biased) > 10 * standard_error  # the V-statistic (diagonal kept) is biased upwards


def test_kid_grows_with_a_mean_shift_and_reports_subset_spread():
    rng = np.random.default_rng(1)
    real = rng.standard_normal((600, 4))
    same, shifted = rng.standard_normal((600, 4)), rng.standard_normal((600, 4)) + 0.5
    kid_same, std_same = kernel_inception_distance(same, real, num_subsets=50, subset_size=200)
    kid_shift, _ = kernel_inception_distance(torch.from_numpy(shifted), real, num_subsets=50, subset_size=200)
    assert abs(kid_same) < 3 * std_same and std_same > 0
    assert kid_shift > 10 * std_same
    # The same seed draws the same subsets: a comparison between models is paired; another seed, others.
    paired = kernel_inception_distance(same, real, 50, 200, seed=3)
    assert paired == kernel_inception_distance(same, real, 50, 200, seed=3)
    assert paired != kernel_inception_distance(same, real, 50, 200, seed=4)
    with pytest.raises(ValueError, match="feature sizes differ"):
        kernel_inception_distance(real, real[:, :2])


def test_frechet_distance_of_sampled_gaussians_matches_the_closed_form():
    # N(0, diag(1, 4)) vs N((1, 0), diag(4, 1)): (1² + 0²) + (1 − 2)² + (2 − 1)² = 3.
    rng = np.random.default_rng(2)
    a = rng.standard_normal((200_000, 2)) * [1.0, 2.0]
    b = rng.standard_normal((200_000, 2)) * [2.0, 1.0] + [1.0, 0.0]
    assert frechet_distance(*feature_statistics(a), *feature_statistics(b)) == pytest.approx(3.0, abs=0.03)


def test_knn_radii_and_precision_recall_hand_computed():
    real, fake = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([[0.5], [10.0]])
    np.testing.assert_allclose(knn_radii(real, 1), [1.0, 1.0, 1.0, 1.0])
    # 0.5 is within 1 of real 0 and 1, 10 is not: precision 1/2. Each fake's nearest other fake is
    # 9.5 away, so the ball around 0.5 covers every real point: recall 1.
    assert precision_recall(real, fake, k=1) == (0.5, 1.0)


def test_precision_recall_identical_sets_disjoint_sets_and_a_dropped_mode():
    rng = np.random.default_rng(3)
    mode_a, mode_b = rng.standard_normal((300, 2)), rng.standard_normal((300, 2)) + [20.0, 0.0]
    real = np.concatenate([mode_a, mode_b])
    assert precision_recall(real, real, k=3) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)
    only_a = rng.standard_normal((600, 2))  # same count, one mode dropped
    precision, recall = precision_recall(real, only_a, k=3)
    assert precision > 0.9 and 0.4 < recall < 0.6
    with pytest.raises(ValueError, match="more than k points"):
        precision_recall(real, only_a[:3], k=3)
