"""Kernel Inception Distance: an unbiased squared MMD with a cubic polynomial kernel.

Bińkowski et al. 2018, "Demystifying MMD GANs", section 4 / appendix. With features ``x, y`` in
``R^d`` and the kernel ``k(x, y) = (xᵀy / d + 1)³``, the unbiased estimate of MMD² between ``m``
samples ``X`` and ``n`` samples ``Y`` is (Gretton et al. 2012, eq. 3)

    MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n−1)) Σ_{i≠j} k(y_i, y_j) − 2/(mn) Σ_{i,j} k(x_i, y_j).

Unlike the Fréchet distance it has no bias that depends on the number of samples (its expectation
is the population MMD², 0 for identical distributions, so small negative values occur), which makes
it the estimator to trust when the reference set is small. As the paper's reference code (and
clean-fid / torch-fidelity), the estimate is averaged over random subsets of ``subset_size`` points
of each set, drawn without replacement, and their standard deviation is reported beside the mean.
"""

from __future__ import annotations

import numpy as np
import torch

from advtune.metrics.frechet import as_float64

__all__ = ["polynomial_kernel", "mmd2_unbiased", "kernel_inception_distance"]


def _feature_matrix(features: np.ndarray | torch.Tensor) -> np.ndarray:
    features = as_float64(features)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"KID: features must be (N, D) with N >= 2, got {features.shape}")
    return features


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """``k(x, y) = (xᵀy / d + coef0)^degree`` for all pairs: ``(M, D), (N, D) → (M, N)``."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


def _subset_mmd2(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray, in_x: np.ndarray, in_y: np.ndarray) -> np.ndarray:
    """MMD²_u of each subset pair, ``(S,)``, from the full kernels and 0/1 membership rows ``(S, M)``, ``(S, N)``.

    A block sum ``Σ_{i∈I, j∈J} K_ij`` is ``1_Iᵀ K 1_J``: matrix products instead of gathering blocks.
    """
    m, n = in_x.sum(1), in_y.sum(1)
    sum_xx = ((in_x @ k_xx) * in_x).sum(1) - in_x @ np.diag(k_xx)
    sum_yy = ((in_y @ k_yy) * in_y).sum(1) - in_y @ np.diag(k_yy)
    sum_xy = ((in_x @ k_xy) * in_y).sum(1)
    return sum_xx / (m * (m - 1)) + sum_yy / (n * (n - 1)) - 2.0 * sum_xy / (m * n)


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased MMD² (module docstring) between ``x (M, D)`` and ``y (N, D)``, ``M, N >= 2``."""
    kernels = (polynomial_kernel(x, x, degree, coef0), polynomial_kernel(y, y, degree, coef0),
               polynomial_kernel(x, y, degree, coef0))
    return float(_subset_mmd2(*kernels, np.ones((1, len(x))), np.ones((1, len(y))))[0])


def kernel_inception_distance(
    features_a: np.ndarray | torch.Tensor,
    features_b: np.ndarray | torch.Tensor,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID between two feature sets: mean and standard deviation of MMD²_u over random subsets.

    Args:
        features_a: ``(M, D)`` features of one set (e.g. generated).
        features_b: ``(N, D)`` features of the other (e.g. real).
        num_subsets: subsets drawn (each a fresh pair of subsets of both sets).
        subset_size: points per subset, capped at ``min(M, N)``; a set of exactly that many points
            is whole in every subset (the standard deviation is 0 when both sets are).
        seed: seed of the subset draws (the same draws for every model compared).

    Returns:
        ``(kid, kid_std)`` as floats. Not clipped: a negative mean means "indistinguishable".
    """
    a, b = _feature_matrix(features_a), _feature_matrix(features_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"KID: feature sizes differ, {a.shape[1]} vs {b.shape[1]}")
    if num_subsets < 1 or subset_size < 2:
        raise ValueError(f"KID: num_subsets >= 1 and subset_size >= 2 required, got {num_subsets}, {subset_size}")
    size = min(int(subset_size), a.shape[0], b.shape[0])
    # Kernels of all pairs once; each subset is a pair of membership rows over them.
    rng = np.random.default_rng(seed)
    in_a, in_b = np.zeros((int(num_subsets), a.shape[0])), np.zeros((int(num_subsets), b.shape[0]))
    for row in range(int(num_subsets)):
        in_a[row, rng.choice(a.shape[0], size, replace=False)] = 1.0
        in_b[row, rng.choice(b.shape[0], size, replace=False)] = 1.0
    values = _subset_mmd2(polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b), in_a, in_b)
    return float(np.mean(values)), float(np.std(values))
