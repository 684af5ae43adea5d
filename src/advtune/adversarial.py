"""``AdversarialLossCalculator``: every adversarial term of both players, from any training loop.

It computes and returns ``{"loss": scalar_to_backprop, **detached_metrics}``. It never calls
``backward`` and never steps an optimizer: the caller owns the two-player step (see
``examples/plain_pytorch_loop.py`` for a plain loop, :class:`advtune.training.AdversarialModule`
for Lightning). Its only state — ADA's ``p`` and LeCam's anchors — is in :meth:`state_dict`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from advtune.adversarial_discriminator import (add_discriminator_penalties, discriminator_metrics,
                                              double_backward_attention, scored_input)
from advtune.losses import (GAN_LOSS_TYPES, PAIRED_LOSS_TYPES, LeCamAnchors, discriminator_loss, feature_matching_loss,
                            generator_loss, lazy_regularization_gain)
from advtune.losses.adaptive import adaptive_weighting

__all__ = ["AdversarialLossCalculator"]

_WARMUP_MODES = ("generator", "full")
_FM_NORMALIZATIONS = ("mean", "relative")


class AdversarialLossCalculator:
    """Weights, warm-up, augmentation, feature matching and penalties of an adversarial loss.

    Generator loss (``compute_generator_loss``)::

        loss = b · L_base + s · (λ_adv · w_adapt · L_G(D(A(fake))) + λ_fm · L_fm(D(A(real)), D(A(fake))))

    with ``b`` the base-loss annealing weight, ``s`` the schedule's ramp (``adversarial_scale``), ``A``
    the augmentation, and ``w_adapt`` the adaptive weight of taming-transformers (Esser et al. 2021,
    eq. 7) when ``use_adaptive_weight``, else 1. ``w_adapt`` is computed from the *unannealed*
    ``L_base`` (taming applies it to the NLL), so annealing ``b`` to 0 keeps the adversarial term.
    Discriminator loss (``compute_discriminator_loss``)::

        loss = L_D(D(A(real)), D(A(fake))) + λ_LC · LeCam + g · (γ_R1/2 · R1 + γ_R2/2 · R2 + λ_gp · GP)

    with ``g`` the lazy-regularization gain (StyleGAN2: the penalties run every
    ``regularization_interval`` steps, multiplied by that interval). R1/R2 differentiate at the
    un-augmented input with ``A`` inside D, as StyleGAN2-ADA does, and at the tensor the network
    scores for D's own re-noising (:mod:`advtune.adversarial_discriminator`), under the math attention
    kernel (double backward).

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
        r2_weight: γ of the R2 penalty on fake inputs (R1 + R2 with ``relativistic``: R3GAN).
        gp_weight: λ of the WGAN-GP gradient penalty (Gulrajani et al. 2017).
        lecam_weight: λ_LC of LeCam regularization (Tseng et al. 2021).
        lecam_decay: decay of LeCam's anchors (moving averages of the mean real / fake logits).
        regularization_interval: lazy regularization interval ``k`` (1 = every step).
        use_adaptive_weight: scale the adversarial term by the adaptive weight (needs
            ``base_loss`` and ``last_layer``).
        feature_matching_normalization: ``"mean"`` or ``"relative"`` (see ``feature_matching_loss``).
        max_adaptive_weight: clamp of the adaptive weight.
        augment: ``A``, a differentiable augmenter of what D sees (:mod:`advtune.augment`), or ``None``.
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
        lecam_weight: float = 0.0,
        lecam_decay: float = 0.99,
        regularization_interval: int = 1,
        use_adaptive_weight: bool = False,
        feature_matching_normalization: str = "mean",
        max_adaptive_weight: float = 1e4,
        augment: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        for key, value, valid in (("loss_type", loss_type, GAN_LOSS_TYPES), ("warmup_mode", warmup_mode, _WARMUP_MODES),
                                  ("feature_matching_normalization", feature_matching_normalization, _FM_NORMALIZATIONS)):
            if value not in valid:
                raise ValueError(f"adversarial.{key} {value!r} is unknown; valid: {', '.join(valid)}")
        for name, value in (("adversarial_weight", adversarial_weight), ("feature_matching_weight", feature_matching_weight),
                            ("r1_weight", r1_weight), ("r2_weight", r2_weight), ("gp_weight", gp_weight),
                            ("lecam_weight", lecam_weight), ("warmup_steps", warmup_steps)):
            if not value >= 0:  # NaN too
                raise ValueError(f"adversarial.{name} must be >= 0, got {value}")
        if not 0.0 <= lecam_decay < 1.0:
            raise ValueError(f"adversarial.lecam_decay must be in [0, 1), got {lecam_decay}")
        if regularization_interval < 1:
            raise ValueError(f"adversarial.regularization_interval must be >= 1, got {regularization_interval}")
        if augment is not None and not callable(augment):
            raise ValueError(f"adversarial.augment must be an augmenter (advtune.augment), got {type(augment).__name__}")
        if loss_type == "wgan" and getattr(augment, "target", None) is not None:
            raise ValueError("adversarial.augment: ADA adapts p from r_t = E[sign(D(real))], which means nothing for "
                             "loss_type=wgan (the critic has no fixed origin); set augment.target=null or use DiffAugment")
        self.adversarial_weight = float(adversarial_weight)
        self.feature_matching_weight = float(feature_matching_weight)
        self.warmup_steps = int(warmup_steps)
        self.warmup_mode = warmup_mode
        self.loss_type = loss_type
        self.r1_weight = float(r1_weight)
        self.r2_weight = float(r2_weight)
        self.gp_weight = float(gp_weight)
        self.lecam_weight = float(lecam_weight)
        self.lecam_decay = float(lecam_decay)
        self.regularization_interval = int(regularization_interval)
        self.use_adaptive_weight = bool(use_adaptive_weight)
        self.feature_matching_normalization = feature_matching_normalization
        self.max_adaptive_weight = float(max_adaptive_weight)
        self.augment = augment
        self.lecam = LeCamAnchors(lecam_decay) if lecam_weight > 0 else None

    def generator_active(self, global_step: int) -> bool:
        """Whether the generator's adversarial terms are on at ``global_step``."""
        return global_step >= self.warmup_steps

    def discriminator_active(self, global_step: int) -> bool:
        """Whether the discriminator trains at ``global_step`` (always, unless ``warmup_mode="full"``)."""
        return self.warmup_mode == "generator" or global_step >= self.warmup_steps

    def compute_discriminator_loss(
        self, discriminator: nn.Module, real: Tensor, fake: Tensor, global_step: int = 0,
        with_metrics: bool = True, **cond: Any,
    ) -> dict[str, Tensor]:
        """Discriminator loss on ``real`` and ``fake`` (detached here: no gradient reaches the generator).

        Args:
            discriminator: follows the ``(logits, features)`` contract.
            real: data, ``(B, ...)``.
            fake: generator output, ``(B, ...)``.
            global_step: step for lazy regularization.
            with_metrics: also return the detached metrics (a training loop skips them on the
                steps it does not log; ``d/loss`` and ``d/total`` are always there).
            **cond: passed to the discriminator for both inputs.

        Returns:
            ``{"loss", "d/loss", "d/total"}``, with metrics also ``"d/real_acc"``, ``"d/fake_acc"``,
            ``"d/logits_real"``, ``"d/logits_fake"``, ``"d/r_t"`` and, when they ran, ``"d/r1"``,
            ``"d/r2"``, ``"d/gp"``, ``"d/lecam"``, ``"d/ada_p"``.
        """
        gain = lazy_regularization_gain(global_step, self.regularization_interval)
        want_r1, want_r2 = self.r1_weight > 0 and gain > 0, self.r2_weight > 0 and gain > 0
        real_in, real_cond, real_leaf = scored_input(discriminator, real, cond, self.augment, want_r1)
        fake_in, fake_cond, fake_leaf = scored_input(discriminator, fake, cond, self.augment, want_r2)
        with double_backward_attention(want_r1):
            real_logits, _ = discriminator(real_in, **real_cond)
        with double_backward_attention(want_r2):
            fake_logits, _ = discriminator(fake_in, **fake_cond)
        adv = discriminator_loss(real_logits, fake_logits, self.loss_type)
        loss, terms = add_discriminator_penalties(self, adv, discriminator, (real, fake), (real_logits, fake_logits),
                                                  (real_leaf, fake_leaf), gain, cond)
        metrics = discriminator_metrics(self, (real_logits, fake_logits), adv, loss, terms, real.shape[0], with_metrics)
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
        base_weight: float = 1.0,
        with_metrics: bool = True,
        measure_gradients: bool = False,
        **cond: Any,
    ) -> dict[str, Tensor]:
        """Generator loss: the weighted ``base_loss`` plus the weighted adversarial and feature-matching terms.

        Args:
            discriminator: follows the ``(logits, features)`` contract; its parameters should not
                require grad here (the caller freezes them), the gradient flows to ``fake``.
            real: data, ``(B, ...)``; used for feature matching and the paired criteria.
            fake: generator output with its graph, ``(B, ...)``.
            global_step: compared with ``warmup_steps``.
            base_loss: the generator's non-adversarial loss *before* annealing, or ``None``.
            last_layer: the generator's last weight, for the adaptive weight.
            adversarial_scale: schedule ramp multiplying the adversarial terms.
            base_weight: annealing weight ``b`` of ``base_loss`` (0 = pure adversarial).
            with_metrics: also return the detached metrics (``g/total`` is always there).
            measure_gradients: also report ``g/grad_ratio``, the gradient norm of the weighted
                adversarial term over that of the weighted base loss at ``last_layer`` (two extra
                ``autograd.grad`` calls unless the adaptive weight computes them anyway).
            **cond: passed to the discriminator.

        Returns:
            ``{"loss", "g/total"}``, with metrics also ``"g/adv"``, ``"g/feat"``, ``"g/adv_weight"``,
            ``"g/adaptive_weight"``, ``"g/base"`` and, when measured, ``"g/grad_ratio"``.
        """
        zero = fake.new_zeros(()).float()
        base = zero if base_loss is None else (base_loss if base_weight == 1.0 else base_loss * base_weight)
        if not self.generator_active(global_step) or adversarial_scale <= 0:
            # Exactly zero: the discriminator is not even run, so nothing it says reaches G.
            metrics = {"g/base": base.detach(), "g/adv": zero, "g/feat": zero, "g/adv_weight": zero,
                       "g/adaptive_weight": zero} if with_metrics else {}
            return {"loss": base, "g/total": base.detach(), **metrics}
        fake_logits, fake_features = discriminator(fake if self.augment is None else self.augment(fake), **cond)
        real_logits = real_features = None
        if self.feature_matching_weight > 0 or self.loss_type in PAIRED_LOSS_TYPES:
            with torch.no_grad():
                real_in = real.detach() if self.augment is None else self.augment(real.detach())
                real_logits, real_features = discriminator(real_in, **cond)
        adv = generator_loss(fake_logits, self.loss_type, real_logits)
        weight: Tensor | float = self.adversarial_weight * adversarial_scale
        adaptive, norms = adaptive_weighting(base_loss, adv, last_layer, self.use_adaptive_weight, measure_gradients,
                                             self.max_adaptive_weight)
        if adaptive is not None:
            weight = weight * adaptive
        loss = base + weight * adv
        feat = zero
        if self.feature_matching_weight > 0:
            feat = feature_matching_loss(real_features, fake_features, self.feature_matching_normalization)
            loss = loss + self.feature_matching_weight * adversarial_scale * feat
        metrics = {"g/total": loss.detach()}
        if with_metrics:
            metrics.update({"g/base": base.detach(), "g/adv": adv.detach(), "g/feat": feat.detach(),
                            "g/adv_weight": torch.as_tensor(weight, dtype=torch.float32, device=adv.device).detach(),
                            "g/adaptive_weight": zero if adaptive is None else adaptive})
            if norms is not None:
                base_norm, adversarial_norm = norms
                metrics["g/grad_ratio"] = (weight * adversarial_norm) / (base_weight * base_norm + 1e-12)
        return {"loss": loss, **metrics}

    def state_dict(self) -> dict[str, Any]:
        """ADA's ``p`` and LeCam's anchors (tensors and numbers only), for an exact resume."""
        state: dict[str, Any] = {}
        if hasattr(self.augment, "state_dict"):
            state["augment"] = self.augment.state_dict()
        if self.lecam is not None:
            state["lecam"] = self.lecam.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "augment" in state and hasattr(self.augment, "load_state_dict"):
            self.augment.load_state_dict(state["augment"])
        if "lecam" in state and self.lecam is not None:
            self.lecam.load_state_dict(state["lecam"])
