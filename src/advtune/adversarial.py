"""``AdversarialLossCalculator``: every adversarial term of both players, from any training loop.

It computes and returns ``{"loss": scalar_to_backprop, **detached_metrics}``. It never calls
``backward`` and never steps an optimizer: the caller owns the two-player step (see
``examples/plain_pytorch_loop.py`` for a plain loop, :class:`advtune.training.AdversarialModule`
for Lightning).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from advtune.losses import (
    GAN_LOSS_TYPES,
    adaptive_weight,
    discriminator_accuracy,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
    gradient_penalty,
    lazy_regularization_gain,
    r1_penalty,
    r2_penalty,
)

__all__ = ["AdversarialLossCalculator"]

_WARMUP_MODES = ("generator", "full")
_FM_NORMALIZATIONS = ("mean", "relative")


def _mean(logits: list[Tensor]) -> Tensor:
    return torch.stack([x.detach().float().mean() for x in logits]).mean()


class AdversarialLossCalculator:
    """Weights, warm-up, feature matching and penalties of an adversarial loss.

    Generator loss (``compute_generator_loss``)::

        loss = base_loss + s · (λ_adv · w_adapt · L_G(D(fake)) + λ_fm · L_fm(D(real), D(fake)))

    with ``s`` the schedule's ramp (``adversarial_scale``) and ``w_adapt`` the adaptive weight of
    taming-transformers (Esser et al. 2021, eq. 7) when ``use_adaptive_weight``, else 1.
    Discriminator loss (``compute_discriminator_loss``)::

        loss = L_D(D(real), D(fake)) + g · (γ_R1/2 · R1 + γ_R2/2 · R2 + λ_gp · GP)

    with ``g`` the lazy-regularization gain (StyleGAN2: the penalties run every
    ``regularization_interval`` steps, multiplied by that interval).

    Args:
        adversarial_weight: λ_adv.
        feature_matching_weight: λ_fm (0 disables feature matching and its extra D forward).
        warmup_steps: before this step the generator's adversarial terms are exactly zero
            (taming's ``disc_start``).
        warmup_mode: ``"generator"`` (default): the discriminator keeps training during the warm-up,
            so it is not cold when its term switches on; ``"full"``: neither player's adversarial
            loss trains before ``warmup_steps``.
        loss_type: GAN criterion, one of ``advtune.losses.GAN_LOSS_TYPES``.
        r1_weight: γ of the R1 penalty on real inputs (Mescheder et al. 2018); ``γ/2`` is applied here.
        r2_weight: γ of the R2 penalty on fake inputs.
        gp_weight: λ of the WGAN-GP gradient penalty (Gulrajani et al. 2017).
        regularization_interval: lazy regularization interval ``k`` (1 = every step).
        use_adaptive_weight: scale the adversarial term by the adaptive weight (needs
            ``base_loss`` and ``last_layer``).
        feature_matching_normalization: ``"mean"`` or ``"relative"`` (see ``feature_matching_loss``).
        max_adaptive_weight: clamp of the adaptive weight.
    """

    def __init__(
        self,
        adversarial_weight: float = 1.0,
        feature_matching_weight: float = 0.0,
        warmup_steps: int = 0,
        warmup_mode: str = "generator",
        loss_type: str = "hinge",
        r1_weight: float = 0.0,
        r2_weight: float = 0.0,
        gp_weight: float = 0.0,
        regularization_interval: int = 1,
        use_adaptive_weight: bool = False,
        feature_matching_normalization: str = "mean",
        max_adaptive_weight: float = 1e4,
    ) -> None:
        if loss_type not in GAN_LOSS_TYPES:
            raise ValueError(f"adversarial.loss_type {loss_type!r} is unknown; valid: {', '.join(GAN_LOSS_TYPES)}")
        if warmup_mode not in _WARMUP_MODES:
            raise ValueError(f"adversarial.warmup_mode must be one of {_WARMUP_MODES}, got {warmup_mode!r}")
        if feature_matching_normalization not in _FM_NORMALIZATIONS:
            raise ValueError(
                f"adversarial.feature_matching_normalization must be one of {_FM_NORMALIZATIONS}, "
                f"got {feature_matching_normalization!r}"
            )
        for name, value in (("adversarial_weight", adversarial_weight), ("feature_matching_weight", feature_matching_weight),
                            ("r1_weight", r1_weight), ("r2_weight", r2_weight), ("gp_weight", gp_weight),
                            ("warmup_steps", warmup_steps)):
            if value < 0:
                raise ValueError(f"adversarial.{name} must be >= 0, got {value}")
        if regularization_interval < 1:
            raise ValueError(f"adversarial.regularization_interval must be >= 1, got {regularization_interval}")
        self.adversarial_weight = float(adversarial_weight)
        self.feature_matching_weight = float(feature_matching_weight)
        self.warmup_steps = int(warmup_steps)
        self.warmup_mode = warmup_mode
        self.loss_type = loss_type
        self.r1_weight = float(r1_weight)
        self.r2_weight = float(r2_weight)
        self.gp_weight = float(gp_weight)
        self.regularization_interval = int(regularization_interval)
        self.use_adaptive_weight = bool(use_adaptive_weight)
        self.feature_matching_normalization = feature_matching_normalization
        self.max_adaptive_weight = float(max_adaptive_weight)

    def generator_active(self, global_step: int) -> bool:
        """Whether the generator's adversarial terms are on at ``global_step``."""
        return global_step >= self.warmup_steps

    def discriminator_active(self, global_step: int) -> bool:
        """Whether the discriminator trains at ``global_step`` (always, unless ``warmup_mode="full"``)."""
        return self.warmup_mode == "generator" or global_step >= self.warmup_steps

    def compute_discriminator_loss(
        self, discriminator: nn.Module, real: Tensor, fake: Tensor, global_step: int = 0, **cond: Any
    ) -> dict[str, Tensor]:
        """Discriminator loss on ``real`` and ``fake`` (detached here: no gradient reaches the generator).

        Args:
            discriminator: follows the ``(logits, features)`` contract.
            real: data, ``(B, ...)``.
            fake: generator output, ``(B, ...)``.
            global_step: step for lazy regularization.
            **cond: passed to the discriminator for both inputs.

        Returns:
            ``{"loss", "d/loss", "d/real_acc", "d/fake_acc", "d/logits_real", "d/logits_fake", "d/total"}``
            plus ``"d/r1"``, ``"d/r2"``, ``"d/gp"`` when they ran.
        """
        gain = lazy_regularization_gain(global_step, self.regularization_interval)
        want_r1 = self.r1_weight > 0 and gain > 0
        want_r2 = self.r2_weight > 0 and gain > 0
        real_in = real.detach().requires_grad_(want_r1)
        fake_in = fake.detach().requires_grad_(want_r2)
        real_logits, _ = discriminator(real_in, **cond)
        fake_logits, _ = discriminator(fake_in, **cond)
        adv = discriminator_loss(real_logits, fake_logits, self.loss_type)
        real_acc, fake_acc = discriminator_accuracy(real_logits, fake_logits, self.loss_type)
        metrics = {
            "d/loss": adv.detach(),
            "d/real_acc": real_acc.detach(),
            "d/fake_acc": fake_acc.detach(),
            "d/logits_real": _mean(real_logits),
            "d/logits_fake": _mean(fake_logits),
        }
        loss = adv
        if want_r1:
            r1 = r1_penalty(real_logits, real_in)
            loss = loss + gain * 0.5 * self.r1_weight * r1
            metrics["d/r1"] = r1.detach()
        if want_r2:
            r2 = r2_penalty(fake_logits, fake_in)
            loss = loss + gain * 0.5 * self.r2_weight * r2
            metrics["d/r2"] = r2.detach()
        if self.gp_weight > 0 and gain > 0:
            gp = gradient_penalty(discriminator, real.detach(), fake.detach(), **cond)
            loss = loss + gain * self.gp_weight * gp
            metrics["d/gp"] = gp.detach()
        metrics["d/total"] = loss.detach()
        return {"loss": loss, **metrics}

    def compute_generator_loss(
        self,
        discriminator: nn.Module,
        real: Tensor,
        fake: Tensor,
        global_step: int,
        base_loss: Tensor | None = None,
        last_layer: Tensor | None = None,
        adversarial_scale: float = 1.0,
        **cond: Any,
    ) -> dict[str, Tensor]:
        """Generator loss: ``base_loss`` plus the weighted adversarial and feature-matching terms.

        Args:
            discriminator: follows the ``(logits, features)`` contract; its parameters should not
                require grad here (the caller freezes them), the gradient flows to ``fake``.
            real: data, ``(B, ...)``; only used for feature matching.
            fake: generator output with its graph, ``(B, ...)``.
            global_step: compared with ``warmup_steps``.
            base_loss: the generator's non-adversarial loss (already weighted), or ``None``.
            last_layer: the generator's last weight, for the adaptive weight.
            adversarial_scale: schedule ramp multiplying the adversarial terms.
            **cond: passed to the discriminator.

        Returns:
            ``{"loss", "g/adv", "g/feat", "g/adv_weight", "g/adaptive_weight", "g/base", "g/total"}``.
        """
        zero = fake.new_zeros(()).float()
        base = zero if base_loss is None else base_loss
        metrics = {"g/base": base.detach(), "g/adv": zero, "g/feat": zero, "g/adv_weight": zero, "g/adaptive_weight": zero}
        if not self.generator_active(global_step) or adversarial_scale <= 0:
            # Exactly zero: the discriminator is not even run, so nothing it says reaches G.
            metrics["g/total"] = base.detach()
            return {"loss": base, **metrics}
        fake_logits, fake_features = discriminator(fake, **cond)
        adv = generator_loss(fake_logits, self.loss_type)
        weight = self.adversarial_weight * adversarial_scale
        if self.use_adaptive_weight:
            if base_loss is None or last_layer is None:
                raise ValueError("use_adaptive_weight=True needs base_loss and last_layer in compute_generator_loss")
            if torch.is_grad_enabled():
                w = adaptive_weight(base_loss, adv, last_layer, max_weight=self.max_adaptive_weight)
            else:  # validation: no graph to differentiate; report the unscaled term
                w = torch.ones((), device=adv.device)
            metrics["g/adaptive_weight"] = w.detach()
            weight = weight * w
        loss = base + weight * adv
        if self.feature_matching_weight > 0:
            with torch.no_grad():
                _, real_features = discriminator(real.detach(), **cond)
            feat = feature_matching_loss(real_features, fake_features, self.feature_matching_normalization)
            loss = loss + self.feature_matching_weight * adversarial_scale * feat
            metrics["g/feat"] = feat.detach()
        metrics["g/adv"] = adv.detach()
        metrics["g/adv_weight"] = torch.as_tensor(weight, dtype=torch.float32).detach()
        metrics["g/total"] = loss.detach()
        return {"loss": loss, **metrics}
