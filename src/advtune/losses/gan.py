"""GAN criteria on discriminator logits, chosen by name.

Every function here takes raw logits (never probabilities) and uses ``softplus`` forms of the
binary cross-entropy so that large logits neither overflow nor saturate to ``log(0)``:
``BCE(l, 1) = softplus(-l)`` and ``BCE(l, 0) = softplus(l)``.

Reduction convention (the one place it is written down): a discriminator returns one logits
tensor per sub-discriminator (``list[Tensor]``; a bare ``Tensor`` is treated as a list of one).
Each term of a criterion is the mean over *all* elements of one sub-discriminator's logits
(batch and, for PatchGAN-like outputs, every patch), and the loss is the plain mean of the
per-sub-discriminator losses. So the scale of a loss does not depend on the batch size, the
patch count or the number of sub-discriminators.

Criteria (``D`` = discriminator loss, ``G`` = generator loss; ``r`` real logits, ``f`` fake):

=================  ==========================================  ==============================
name               D                                           G
=================  ==========================================  ==============================
``vanilla``        ``softplus(-r) + softplus(f)``              ``-softplus(f)`` (saturating)
``non_saturating`` ``softplus(-r) + softplus(f)``              ``softplus(-f)``
``hinge``          ``relu(1 - r) + relu(1 + f)``               ``-f``
``lsgan``          ``(r - 1)^2 + f^2``                         ``(f - 1)^2``
``wgan``           ``f - r``                                   ``-f``
``relativistic``   ``softplus(f - r)``                         ``softplus(r - f)``
=================  ==========================================  ==============================

``relativistic`` pairs real ``i`` with fake ``i`` element by element (same shapes), so its generator
loss needs the real logits too (constants for G): pass ``real_logits`` to :func:`generator_loss`.

References: Goodfellow et al. 2014 (vanilla / non-saturating); Lim & Ye 2017 and Miyato et al.
2018 (hinge); Mao et al. 2017 (least squares, a-b-c = 0-1-1); Arjovsky et al. 2017 (WGAN);
Jolicoeur-Martineau 2019 (relativistic pairing, RpGAN), the loss of R3GAN (Huang et al. 2024).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "GAN_LOSS_TYPES",
    "PAIRED_LOSS_TYPES",
    "discriminator_accuracy",
    "discriminator_loss",
    "generator_loss",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "lsgan_discriminator_loss",
    "lsgan_generator_loss",
    "non_saturating_generator_loss",
    "real_sign_mean",
    "relativistic_discriminator_loss",
    "relativistic_generator_loss",
    "vanilla_discriminator_loss",
    "vanilla_generator_loss",
    "wgan_discriminator_loss",
    "wgan_generator_loss",
]

Logits = Tensor | Sequence[Tensor]


def as_logits_list(logits: Logits, name: str) -> list[Tensor]:
    """Return ``logits`` as a non-empty list of tensors (a bare tensor becomes a list of one)."""
    if isinstance(logits, Tensor):
        return [logits]
    if not isinstance(logits, (list, tuple)):
        raise TypeError(f"{name} must be a Tensor or a list of Tensors, got {type(logits).__name__}")
    if len(logits) == 0:
        raise ValueError(f"{name} is an empty list; expected one logits tensor per sub-discriminator")
    for index, item in enumerate(logits):
        if not isinstance(item, Tensor):
            raise TypeError(f"{name}[{index}] must be a Tensor, got {type(item).__name__}")
    return list(logits)


def _paired(real_logits: Logits, fake_logits: Logits) -> list[tuple[Tensor, Tensor]]:
    real = as_logits_list(real_logits, "real_logits")
    fake = as_logits_list(fake_logits, "fake_logits")
    if len(real) != len(fake):
        raise ValueError(
            f"real_logits has {len(real)} sub-discriminators but fake_logits has {len(fake)}"
        )
    return list(zip(real, fake))


def _mean_d(real_logits: Logits, fake_logits: Logits, term: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    losses = [term(real, fake) for real, fake in _paired(real_logits, fake_logits)]
    return torch.stack(losses).mean()


def _mean_g(fake_logits: Logits, term: Callable[[Tensor], Tensor]) -> Tensor:
    losses = [term(fake) for fake in as_logits_list(fake_logits, "fake_logits")]
    return torch.stack(losses).mean()


def vanilla_discriminator_loss(real_logits: Logits, fake_logits: Logits) -> Tensor:
    """``D = mean(softplus(-r)) + mean(softplus(f))`` = BCE(real, 1) + BCE(fake, 0) (Goodfellow 2014).

    Also the discriminator loss of ``non_saturating``.
    """
    return _mean_d(real_logits, fake_logits, lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean())


def vanilla_generator_loss(fake_logits: Logits) -> Tensor:
    """``G = -mean(softplus(f))`` = -BCE(fake, 0), the original saturating minimax generator loss."""
    return _mean_g(fake_logits, lambda f: -F.softplus(f).mean())


def non_saturating_generator_loss(fake_logits: Logits) -> Tensor:
    """``G = mean(softplus(-f))`` = BCE(fake, 1), the non-saturating heuristic of Goodfellow 2014."""
    return _mean_g(fake_logits, lambda f: F.softplus(-f).mean())


def hinge_discriminator_loss(real_logits: Logits, fake_logits: Logits) -> Tensor:
    """``D = mean(relu(1 - r)) + mean(relu(1 + f))`` (Lim & Ye 2017; Miyato et al. 2018)."""
    return _mean_d(real_logits, fake_logits, lambda r, f: F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean())


def hinge_generator_loss(fake_logits: Logits) -> Tensor:
    """``G = -mean(f)`` (hinge and WGAN generators share it)."""
    return _mean_g(fake_logits, lambda f: -f.mean())


def lsgan_discriminator_loss(real_logits: Logits, fake_logits: Logits) -> Tensor:
    """``D = mean((r - 1)^2) + mean(f^2)`` (Mao et al. 2017, targets 1 for real and 0 for fake)."""
    return _mean_d(real_logits, fake_logits, lambda r, f: (r - 1.0).square().mean() + f.square().mean())


def lsgan_generator_loss(fake_logits: Logits) -> Tensor:
    """``G = mean((f - 1)^2)`` (Mao et al. 2017)."""
    return _mean_g(fake_logits, lambda f: (f - 1.0).square().mean())


def wgan_discriminator_loss(real_logits: Logits, fake_logits: Logits) -> Tensor:
    """``D = mean(f) - mean(r)``, the critic loss of Arjovsky et al. 2017 (pair it with a penalty)."""
    return _mean_d(real_logits, fake_logits, lambda r, f: f.mean() - r.mean())


def wgan_generator_loss(fake_logits: Logits) -> Tensor:
    """``G = -mean(f)`` (Arjovsky et al. 2017)."""
    return _mean_g(fake_logits, lambda f: -f.mean())


def relativistic_discriminator_loss(real_logits: Logits, fake_logits: Logits) -> Tensor:
    """``D = mean(softplus(f - r))`` = BCE(r - f, 1), real ``i`` paired with fake ``i`` (RpGAN, R3GAN)."""
    return _mean_d(real_logits, fake_logits, lambda r, f: F.softplus(f - r).mean())


def relativistic_generator_loss(fake_logits: Logits, real_logits: Logits) -> Tensor:
    """``G = mean(softplus(r - f))`` = BCE(f - r, 1); the real logits are constants for G."""
    return _mean_d(real_logits, fake_logits, lambda r, f: F.softplus(r.detach() - f).mean())


_CRITERIA: dict[str, tuple[Callable[[Logits, Logits], Tensor], Callable[..., Tensor]]] = {
    "vanilla": (vanilla_discriminator_loss, vanilla_generator_loss),
    "non_saturating": (vanilla_discriminator_loss, non_saturating_generator_loss),
    "hinge": (hinge_discriminator_loss, hinge_generator_loss),
    "lsgan": (lsgan_discriminator_loss, lsgan_generator_loss),
    "wgan": (wgan_discriminator_loss, wgan_generator_loss),
    "relativistic": (relativistic_discriminator_loss, relativistic_generator_loss),
}

GAN_LOSS_TYPES: tuple[str, ...] = tuple(_CRITERIA)
# Criteria whose generator loss also needs the real logits.
PAIRED_LOSS_TYPES: tuple[str, ...] = ("relativistic",)

# The logit that separates "judged real" from "judged fake": 0 (sigmoid = 0.5) for the BCE
# criteria and the hinge / critic sign; LSGAN regresses to targets 0 and 1, so halfway is 0.5.
# A relativistic D judges pairs: real i is "judged real" when it scores above fake i.
_DECISION_THRESHOLD = {"vanilla": 0.0, "non_saturating": 0.0, "hinge": 0.0, "lsgan": 0.5, "wgan": 0.0}


def _check_loss_type(loss_type: str) -> str:
    if loss_type not in _CRITERIA:
        raise ValueError(f"unknown GAN loss_type {loss_type!r}; valid names: {', '.join(GAN_LOSS_TYPES)}")
    return loss_type


def discriminator_loss(real_logits: Logits, fake_logits: Logits, loss_type: str) -> Tensor:
    """Discriminator loss of the criterion ``loss_type`` (see the module docstring for formulas).

    Args:
        real_logits: logits on real inputs, one tensor per sub-discriminator (or one tensor).
        fake_logits: logits on generated inputs, same number of sub-discriminators.
        loss_type: one of ``GAN_LOSS_TYPES``.

    Returns:
        Scalar tensor: mean over sub-discriminators of the per-sub-discriminator loss.
    """
    return _CRITERIA[_check_loss_type(loss_type)][0](real_logits, fake_logits)


def generator_loss(fake_logits: Logits, loss_type: str, real_logits: Logits | None = None) -> Tensor:
    """Generator (adversarial) loss of the criterion ``loss_type``; scalar, same reduction as D.

    ``real_logits`` is needed by the paired criteria (``PAIRED_LOSS_TYPES``) and ignored by the others.
    """
    if _check_loss_type(loss_type) in PAIRED_LOSS_TYPES:
        if real_logits is None:
            raise ValueError(f"loss_type {loss_type!r} pairs each fake with a real: generator_loss needs real_logits")
        return _CRITERIA[loss_type][1](fake_logits, real_logits)
    return _CRITERIA[loss_type][1](fake_logits)


def _judged_real(real: Tensor, fake: Tensor, loss_type: str) -> tuple[Tensor, Tensor]:
    """``(real − t, t − fake)``: positive where the D is right (``t`` the decision threshold)."""
    if loss_type in PAIRED_LOSS_TYPES:
        return real - fake, real - fake
    threshold = _DECISION_THRESHOLD[loss_type]
    return real - threshold, threshold - fake


@torch.no_grad()
def discriminator_accuracy(real_logits: Logits, fake_logits: Logits, loss_type: str) -> tuple[Tensor, Tensor]:
    """Fraction of real logits above and of fake logits below the decision threshold, for logging.

    The threshold is 0 for every criterion except ``lsgan`` (0.5, halfway between its targets); a
    ``relativistic`` D is right on a pair when ``r > f`` (both fractions are then that one).
    Fractions are taken per sub-discriminator over all logit elements, then averaged.

    Returns:
        ``(real_acc, fake_acc)``: detached scalar float tensors in ``[0, 1]``.
    """
    _check_loss_type(loss_type)
    margins = [_judged_real(real, fake, loss_type) for real, fake in _paired(real_logits, fake_logits)]
    real_acc = torch.stack([(real > 0).float().mean() for real, _ in margins]).mean()
    fake_acc = torch.stack([(fake > 0).float().mean() for _, fake in margins]).mean()
    return real_acc, fake_acc


@torch.no_grad()
def real_sign_mean(real_logits: Logits, fake_logits: Logits, loss_type: str) -> Tensor:
    """ADA's overfitting heuristic ``r_t = E[sign(D(real) − t)]`` (Karras et al. 2020, eq. 1), in ``[-1, 1]``.

    ``t`` is the criterion's decision threshold (the paired fake for ``relativistic``); 1 means the
    D calls every real image real with a margin, the sign of overfitting on a small data set.
    Mean over elements per sub-discriminator, then over sub-discriminators. Detached scalar.
    """
    _check_loss_type(loss_type)
    margins = [_judged_real(real, fake, loss_type)[0] for real, fake in _paired(real_logits, fake_logits)]
    return torch.stack([margin.float().sign().mean() for margin in margins]).mean()
