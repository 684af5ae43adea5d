"""Fréchet distance between two Gaussians fitted to feature sets (the "F" of FID).

Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", eq. (6):

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})

``Tr((Σ₁ Σ₂)^{1/2})`` is computed in the symmetric form ``Tr((√Σ₁ Σ₂ √Σ₁)^{1/2})``:
Σ₁ Σ₂ and √Σ₁ Σ₂ √Σ₁ are similar matrices, so their eigenvalues (and the traces of their
square roots) agree, and the second is symmetric positive semi-definite, so
``numpy.linalg.eigh`` gives real, non-negative eigenvalues (round-off negatives are clipped
to 0). This avoids the small imaginary parts and the singular-matrix retries that
``scipy.linalg.sqrtm`` needs on the non-symmetric product.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["frechet_distance", "feature_statistics"]


def as_float64(value: np.ndarray | torch.Tensor | float) -> np.ndarray:
    """A tensor, array or scalar as a float64 NumPy array (detached, on the CPU)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(
    mu1: np.ndarray | torch.Tensor | float,
    sigma1: np.ndarray | torch.Tensor | float,
    mu2: np.ndarray | torch.Tensor | float,
    sigma2: np.ndarray | torch.Tensor | float,
) -> float:
    """Squared Fréchet (2-Wasserstein) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    Args:
        mu1: mean ``(D,)`` (a scalar for D = 1).
        sigma1: covariance ``(D, D)`` (a scalar variance for D = 1).
        mu2: mean ``(D,)``.
        sigma2: covariance ``(D, D)``.

    Returns:
        The distance as a Python float, ``>= 0``. For D = 1 it is
        ``(mu1 - mu2)² + (sqrt(sigma1) - sqrt(sigma2))²``.
    """
    mu1, mu2 = np.atleast_1d(as_float64(mu1)), np.atleast_1d(as_float64(mu2))
    sigma1, sigma2 = np.atleast_2d(as_float64(sigma1)), np.atleast_2d(as_float64(sigma2))
    dim = mu1.shape[0]
    if mu1.shape != (dim,) or mu2.shape != (dim,):
        raise ValueError(
            f"frechet_distance: means must both be (D,), got {mu1.shape} and {mu2.shape}"
        )
    if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(
            f"frechet_distance: covariances must be ({dim}, {dim}), "
            f"got {sigma1.shape} and {sigma2.shape}"
        )
    sqrt_sigma1 = _sqrt_psd(sigma1)
    middle = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    trace_sqrt_product = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product
    return float(max(distance, 0.0))  # clip round-off below zero for identical statistics


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of a feature set (float64, as pytorch-fid / TTUR).

    Args:
        features: ``(N, D)`` with ``N >= 2``.

    Returns:
        ``(mu (D,), sigma (D, D))`` as float64 NumPy arrays.
    """
    features = as_float64(features)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(
            f"feature_statistics: features must be (N, D) with N >= 2, got {features.shape}"
        )
    mu = features.mean(axis=0)
    sigma = np.cov(features, rowvar=False, ddof=1).reshape(features.shape[1], features.shape[1])
    return mu, sigma
