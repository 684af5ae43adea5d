"""Feature-matching loss between the discriminator's feature maps on real and generated inputs.

L1 distance between paired intermediate feature maps (Larsen et al. 2016; Kumar et al. 2019,
MelGAN; Kong et al. 2020, HiFi-GAN). The real features are the targets, so they are detached here:
the generator is pulled towards them and no gradient reaches the discriminator through them.

Normalization, over ``N`` = all layers of all sub-discriminators (``D_k^l`` = layer ``l`` of
sub-discriminator ``k``, ``x`` real, ``x̂`` generated):

* ``"mean"``: ``1/N Σ_k Σ_l mean|D_k^l(x) - D_k^l(x̂)|``. HiFi-GAN sums these terms; averaging
  instead keeps the scale independent of how deep or how many the discriminators are.
* ``"relative"``: ``1/N Σ_k Σ_l mean|D_k^l(x) - D_k^l(x̂)| / (mean|D_k^l(x)| + eps)``, the
  ``L_feat`` of EnCodec (Défossez et al. 2022, section 3.4), which makes each layer's term
  independent of its activation scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["FEATURE_MATCHING_NORMALIZATIONS", "feature_matching_loss"]

FEATURE_MATCHING_NORMALIZATIONS: tuple[str, ...] = ("mean", "relative")


def _check_structure(real_features: Sequence[Sequence[Tensor]], fake_features: Sequence[Sequence[Tensor]]) -> None:
    if len(real_features) != len(fake_features):
        raise ValueError(
            f"feature_matching_loss: real_features has {len(real_features)} sub-discriminators, "
            f"fake_features has {len(fake_features)}"
        )
    for index, (real_layers, fake_layers) in enumerate(zip(real_features, fake_features)):
        if len(real_layers) != len(fake_layers):
            raise ValueError(
                f"feature_matching_loss: sub-discriminator {index} has {len(real_layers)} real "
                f"feature maps but {len(fake_layers)} fake ones"
            )
        for layer, (real, fake) in enumerate(zip(real_layers, fake_layers)):
            if real.shape != fake.shape:
                raise ValueError(
                    f"feature_matching_loss: sub-discriminator {index}, layer {layer}: real shape "
                    f"{tuple(real.shape)} != fake shape {tuple(fake.shape)}"
                )


def feature_matching_loss(
    real_features: Sequence[Sequence[Tensor]],
    fake_features: Sequence[Sequence[Tensor]],
    normalization: str = "mean",
    eps: float = 1e-8,
) -> Tensor:
    """L1 feature-matching loss averaged over all layers of all sub-discriminators.

    Args:
        real_features: per sub-discriminator, its feature maps on real inputs (targets, detached).
        fake_features: the same structure on generated inputs; gradients flow through these.
        normalization: ``"mean"`` or ``"relative"`` (see the module docstring for formulas).
        eps: added to ``mean|D_k^l(x)|`` in the ``"relative"`` denominator.

    Returns:
        Scalar loss.
    """
    if normalization not in FEATURE_MATCHING_NORMALIZATIONS:
        raise ValueError(
            f"unknown feature matching normalization {normalization!r}; "
            f"valid: {', '.join(FEATURE_MATCHING_NORMALIZATIONS)}"
        )
    _check_structure(real_features, fake_features)
    terms = []
    for real_layers, fake_layers in zip(real_features, fake_features):
        for real, fake in zip(real_layers, fake_layers):
            target = real.detach()
            distance = (target - fake).abs().mean()
            if normalization == "relative":
                distance = distance / (target.abs().mean() + eps)
            terms.append(distance)
    if not terms:
        raise ValueError("feature_matching_loss: the discriminator returned no feature maps to match")
    return torch.stack(terms).mean()
