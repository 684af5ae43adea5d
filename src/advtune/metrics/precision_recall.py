"""Improved precision and recall of generative models (Kynkäänniemi et al. 2019).

Each set's manifold is the union of balls around its points, each ball's radius the distance to the
point's ``k``-th nearest neighbour in the same set (the point itself excluded). Then

    precision = fraction of generated points inside the real manifold   (are samples realistic?)
    recall    = fraction of real points inside the generated manifold   (is the data covered?)

A distance (Fréchet, KID) mixes both failures in one number; recall is what drops when a
generator drops modes (digits it never draws), precision when it draws junk. The paper uses
``k = 3``; both sets should be of similar size (radii grow as a set gets sparser), so compare models
only at equal sample counts.
"""

from __future__ import annotations

import numpy as np
import torch

from advtune.metrics.frechet import as_float64

__all__ = ["knn_radii", "manifold_coverage", "precision_recall"]


def _pairwise_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Euclidean distances ``(M, N)`` (round-off negatives of the expanded square clipped to 0)."""
    squared = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.sqrt(np.clip(squared, 0.0, None))


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance of each of ``(N, D)`` points to its ``k``-th nearest other point, ``(N,)``."""
    distances = _pairwise_distances(features, features)
    # Column 0 of the sorted row is the point itself (distance 0), so the k-th neighbour is column k.
    return np.partition(distances, k, axis=1)[:, k]


def manifold_coverage(manifold: np.ndarray, radii: np.ndarray, queries: np.ndarray) -> float:
    """Fraction of ``queries (Q, D)`` within ``radii[i]`` of some ``manifold[i]`` (``(N, D)``, ``(N,)``)."""
    inside = _pairwise_distances(queries, manifold) <= radii[None, :]
    return float(inside.any(axis=1).mean())


def precision_recall(
    real_features: np.ndarray | torch.Tensor,
    fake_features: np.ndarray | torch.Tensor,
    k: int = 3,
) -> tuple[float, float]:
    """Kynkäänniemi et al. 2019 precision and recall of ``fake`` against ``real`` features.

    Args:
        real_features: ``(N, D)`` features of real data, ``N > k``.
        fake_features: ``(M, D)`` features of generated data, ``M > k``.
        k: neighbour that sets each ball's radius (3 in the paper).

    Returns:
        ``(precision, recall)``, each in [0, 1].
    """
    real, fake = as_float64(real_features), as_float64(fake_features)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"precision_recall: need (N, D) and (M, D) features, got {real.shape} and {fake.shape}")
    if k < 1 or min(len(real), len(fake)) <= k:
        raise ValueError(f"precision_recall: need k >= 1 and more than k points per set, got k={k}, "
                         f"{len(real)} real, {len(fake)} fake")
    precision = manifold_coverage(real, knn_radii(real, k), fake)
    recall = manifold_coverage(fake, knn_radii(fake, k), real)
    return precision, recall
