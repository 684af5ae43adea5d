"""The discriminator side of :class:`~advtune.adversarial.AdversarialLossCalculator`: where the
penalties differentiate, the penalties, ADA's feedback and the D metrics.

Where R1/R2 differentiate (StyleGAN2-ADA, ``training/loss.py``): at the *un-augmented* input, with
the augmentation ``A`` inside the discriminator, so ``γ`` means the same with and without ADA. The
discriminator's own preprocessing (the re-noising of a latent discriminator,
:func:`~advtune.discriminators.base.prepare_discriminator_input`) is measured at the tensor its
network scores, as before: for ``s = prepare(A(x))`` the penalty is ``‖J_Aᵀ ∇_s c(s)‖²``, with the
gradient handed from ``s`` to ``A(x)`` unchanged. Without ``A`` that is ``‖∇_s c(s)‖²``; for the
geometric ops (permutations of pixels) the norm is the same as at ``s``; colour ops and cutout
change it (a contrast ``c`` scales it by ``c``, cutout zeroes the cut square).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from advtune.discriminators.base import prepare_discriminator_input
from advtune.losses import (
    discriminator_accuracy,
    gradient_penalty,
    lecam_penalty,
    r1_penalty,
    r2_penalty,
    real_sign_mean,
)

__all__ = ["add_discriminator_penalties", "discriminator_metrics", "double_backward_attention", "scored_input"]


@contextlib.contextmanager
def double_backward_attention(enabled: bool) -> Iterator[None]:
    """Math SDPA kernel: the fused attention kernels have no derivative of their backward, so a
    penalty (a gradient of a gradient) through an attention discriminator needs the math one."""
    with sdpa_kernel(SDPBackend.MATH) if enabled else contextlib.nullcontext():
        yield


class _ScoredWithGradientTo(torch.autograd.Function):
    """Value: ``scored``; gradient: handed unchanged to ``source`` (same shape). Twice differentiable."""

    @staticmethod
    def forward(ctx: Any, source: Tensor, scored: Tensor) -> Tensor:
        return scored.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def scored_input(
    discriminator: nn.Module, x: Tensor, cond: dict[str, Any], augment: Callable[[Tensor], Tensor] | None,
    penalized: bool,
) -> tuple[Tensor, dict[str, Any], Tensor | None]:
    """``(D input, its cond, the leaf a penalty differentiates at or None)``; ``x`` is detached here.

    Not penalized: ``A(x)``, scored by the discriminator as usual. Penalized: the discriminator's
    preprocessing is applied here (``cond`` says so), and the leaf is ``x`` itself when there is an
    augmentation (see the module docstring), else the scored tensor.
    """
    if not penalized:
        return (x.detach() if augment is None else augment(x.detach())), cond, None
    if augment is None:
        scored, cond = prepare_discriminator_input(discriminator, x.detach(), cond)
        leaf = scored.detach().requires_grad_(True)
        return leaf, cond, leaf
    leaf = x.detach().requires_grad_(True)
    augmented = augment(leaf)
    scored, cond = prepare_discriminator_input(discriminator, augmented.detach(), cond)
    if scored.shape != augmented.shape:
        raise ValueError(f"R1/R2 with augment need a discriminator whose prepare_input keeps the shape; "
                         f"{tuple(augmented.shape)} became {tuple(scored.shape)}")
    return _ScoredWithGradientTo.apply(augmented, scored), cond, leaf


def add_discriminator_penalties(
    calculator: Any, loss: Tensor, discriminator: nn.Module, inputs: tuple[Tensor, Tensor],
    logits: tuple[list[Tensor], list[Tensor]], leaves: tuple[Tensor | None, Tensor | None], gain: float,
    cond: dict[str, Any],
) -> tuple[Tensor, dict[str, Tensor]]:
    """``loss + g · (γ_R1/2 · R1 + γ_R2/2 · R2 + λ_gp · GP) + λ_LC · LeCam`` and the terms that ran.

    Args:
        calculator: the :class:`~advtune.adversarial.AdversarialLossCalculator` (weights, augment, anchors).
        loss: the criterion's discriminator loss.
        discriminator: for the gradient penalty's own forward.
        inputs: ``(real, fake)`` as given to the calculator, ``(B, ...)``.
        logits: ``(real_logits, fake_logits)`` of this step.
        leaves: ``(real, fake)`` leaves of :func:`scored_input`; ``None`` where R1 (R2) is off.
        gain: the lazy-regularization gain of this step (0: no gradient penalty this step).
        cond: the discriminator's conditioning, for the gradient penalty.
    """
    terms: dict[str, Tensor] = {}
    (real_logits, fake_logits), (real_leaf, fake_leaf) = logits, leaves
    if real_leaf is not None:
        terms["d/r1"] = r1_penalty(real_logits, real_leaf)
        loss = loss + gain * 0.5 * calculator.r1_weight * terms["d/r1"]
    if fake_leaf is not None:
        terms["d/r2"] = r2_penalty(fake_logits, fake_leaf)
        loss = loss + gain * 0.5 * calculator.r2_weight * terms["d/r2"]
    if calculator.gp_weight > 0 and gain > 0:
        real, fake = (x.detach() if calculator.augment is None else calculator.augment(x.detach()) for x in inputs)
        with double_backward_attention(True):
            terms["d/gp"] = gradient_penalty(discriminator, real, fake, **cond)
        loss = loss + gain * calculator.gp_weight * terms["d/gp"]
    if calculator.lecam is not None:
        # Like ADA's p, the anchors move only on training steps (not under no_grad: validation).
        anchors = calculator.lecam.update(real_logits, fake_logits, commit=torch.is_grad_enabled())
        terms["d/lecam"] = lecam_penalty(real_logits, fake_logits, *anchors)
        loss = loss + calculator.lecam_weight * terms["d/lecam"]
    return loss, terms


def _mean(logits: list[Tensor]) -> Tensor:
    return torch.stack([x.detach().float().mean() for x in logits]).mean()


def discriminator_metrics(
    calculator: Any, logits: tuple[list[Tensor], list[Tensor]], adv: Tensor, loss: Tensor, terms: dict[str, Tensor],
    batch_size: int, with_metrics: bool,
) -> dict[str, Tensor]:
    """Feed ADA its ``r_t`` (training steps only) and return the D step's detached metrics.

    ``d/loss`` and ``d/total`` always; with ``with_metrics`` also the accuracies, mean logits, ``r_t``,
    the penalty terms and ADA's ``p`` (after this step's adjustment).
    """
    (real_logits, fake_logits), augment = logits, calculator.augment
    observe = getattr(augment, "observe", None)
    r_t = real_sign_mean(real_logits, fake_logits, calculator.loss_type) if with_metrics or observe else None
    if observe is not None and torch.is_grad_enabled():
        observe(r_t, batch_size)
    metrics = {"d/loss": adv.detach(), "d/total": loss.detach()}
    if with_metrics:
        real_acc, fake_acc = discriminator_accuracy(real_logits, fake_logits, calculator.loss_type)
        metrics.update({"d/real_acc": real_acc, "d/fake_acc": fake_acc, "d/logits_real": _mean(real_logits),
                        "d/logits_fake": _mean(fake_logits), "d/r_t": r_t})
        metrics.update({key: value.detach() for key, value in terms.items()})
        if getattr(augment, "p", None) is not None:
            metrics["d/ada_p"] = augment.p.detach().clone()
    return metrics
