"""Losses of latent style transfer (pure functions).

(The codebook / commitment loss of vector quantization lives with the quantizer, in
:mod:`advtune.models.vector_quantizer`, as models sit below losses in the layering.)

Latent style transfer (the AdaIN statistics of Huang & Belongie 2017, "Arbitrary Style Transfer in
Real-time with Adaptive Instance Normalization", eq. 11 and 12, taken on latents instead of VGG
features):

- content (reverse) loss ``‖z_y − z_c‖²``: the transferred latent stays near the content latent;
- style loss ``‖μ(z_y) − μ(z_ref)‖² + ‖σ(z_y) − σ(z_ref)‖²``, with ``μ`` and ``σ`` the mean and
  standard deviation of each channel over the spatial positions of each sample;
- identity loss ``‖T(z_c, z_c) − z_c‖²``: transferring a latent towards itself changes nothing.

Reduction convention (all losses here): every squared norm is a *mean* over its elements, i.e. an
MSE. For the latents that is the mean over ``(B, C, H, W)``; for the style statistics it is the
mean over ``(B, C)`` of the squared differences of ``μ`` and of ``σ`` (the two means are added).
So no loss grows with the batch size, the latent width or the spatial size, and the weights of the
reference recipe (style 10, reverse 1, codebook 1) compare like with like (the codebook loss is an
MSE too).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from advtune.losses._checks import check_same_shape

__all__ = [
    "channel_statistics",
    "content_loss",
    "identity_loss",
    "style_loss",
]



def content_loss(z_transferred: Tensor, z_content: Tensor) -> Tensor:
    """Reverse / content loss ``mean((z_y − z_c)²)``.

    Args:
        z_transferred: transferred latent ``z_y``, ``(B, C, H, W)``.
        z_content: content latent ``z_c``, same shape.

    Returns:
        Scalar MSE over all elements.
    """
    check_same_shape(z_transferred, z_content, "content_loss")
    return F.mse_loss(z_transferred, z_content)


def identity_loss(z_identity: Tensor, z_content: Tensor) -> Tensor:
    """Identity loss ``mean((T(z_c, z_c) − z_c)²)``; ``z_identity`` is ``T(z_c, z_c)``, ``(B, C, H, W)``."""
    check_same_shape(z_identity, z_content, "identity_loss")
    return F.mse_loss(z_identity, z_content)


def channel_statistics(z: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-sample, per-channel mean and standard deviation over the spatial positions.

    ``σ = sqrt(Var + eps)`` with the biased (population) variance, as instance normalisation; the
    ``eps`` keeps the gradient of ``σ`` finite on a constant channel.

    Args:
        z: latent ``(B, C, *spatial)`` with at least one spatial dimension.
        eps: added to the variance before the square root.

    Returns:
        ``(mean, std)``, each ``(B, C)``.
    """
    if z.dim() < 3:
        raise ValueError(f"channel_statistics: expected (B, C, *spatial), got shape {tuple(z.shape)}")
    flat = z.flatten(start_dim=2)
    mean = flat.mean(dim=2)
    std = (flat.var(dim=2, unbiased=False) + eps).sqrt()
    return mean, std


def style_loss(z_transferred: Tensor, z_reference: Tensor, eps: float = 1e-5) -> Tensor:
    """Style loss ``‖μ(z_y) − μ(z_ref)‖² + ‖σ(z_y) − σ(z_ref)‖²`` (each squared norm a mean over ``(B, C)``).

    The two latents may differ in spatial size, not in batch or channel count: each sample ``b``
    of ``z_y`` is matched to the statistics of its own reference ``z_ref[b]``.

    Args:
        z_transferred: transferred latent ``z_y``, ``(B, C, H, W)``.
        z_reference: style reference latent ``z_ref``, ``(B, C, H', W')``.
        eps: see :func:`channel_statistics`.

    Returns:
        Scalar loss.
    """
    if z_transferred.shape[:2] != z_reference.shape[:2]:
        raise ValueError(
            "style_loss: batch and channel sizes differ, "
            f"{tuple(z_transferred.shape[:2])} vs {tuple(z_reference.shape[:2])}"
        )
    mean_y, std_y = channel_statistics(z_transferred, eps)
    mean_ref, std_ref = channel_statistics(z_reference, eps)
    return F.mse_loss(mean_y, mean_ref) + F.mse_loss(std_y, std_ref)

