"""Differentiable augmentation of what the discriminator sees: DiffAugment and ADA.

A discriminator trained on few images memorises them; augmenting its inputs stops that, and as
long as *every* input of the discriminator is augmented — real and fake in the D step, fake in the
G step — and the transformations are differentiable, the generator still learns the un-augmented
distribution (DiffAugment, Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN
Training"; ADA, Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data").
:class:`~advtune.adversarial.AdversarialLossCalculator` applies an augmenter given as its
``augment`` argument to exactly those inputs.

* :class:`DiffAugment` applies its policy to every sample (DiffAugment's ``color,translation,cutout``).
* :class:`AdaptiveAugment` applies each op to a sample with probability ``p``, drawing ADA's
  non-leaking laws (the identity among the outcomes; Gaussian and log-normal colour parameters; see
  :mod:`advtune.augment_ops`), and adapts ``p`` with
  ADA's overfitting heuristic ``r_t = E[sign(D(real))]``: every ``interval`` D steps, ``p`` moves by
  ``sign(r_t − target) · batch · interval / speed_images`` (StyleGAN2-ADA: target 0.6, ``p`` can go
  from 0 to 1 in 500k images). ``p`` lives on the device: adapting it never syncs with the host.

Inputs are ``(B, C, H, W)``: images, or latents (the Flux latent discriminator). For latents keep to
the geometric ops (``xflip``, ``rotate90``, ``translation``, ``cutout``): they move latent pixels the
way they move image pixels. The colour ops act on latent channels as if they were colours.
Translation and cutout fill with 0 (mid-grey for images in [-1, 1]), as DiffAugment does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from advtune.augment_ops import ADA_OPS, DIFFAUGMENT_OPS, ada_op, diffaugment_op

__all__ = ["ADA_OPS", "DIFFAUGMENT_OPS", "AdaptiveAugment", "DiffAugment", "ada_op", "diffaugment_op"]

_POLICIES = {"color": ("brightness", "saturation", "contrast"), "translation": ("translation",), "cutout": ("cutout",)}


def _check_input(x: Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"augmentation needs (B, C, H, W) images or latents, got {tuple(x.shape)}")


class DiffAugment:
    """DiffAugment (Zhao et al. 2020): every op of the policy on every sample, differentiably.

    Args:
        policy: groups from ``color`` (brightness, saturation, contrast), ``translation`` (up to 1/8
            of the side) and ``cutout`` (a square of half the side), applied in that order.
    """

    def __init__(self, policy: Sequence[str] = ("color", "translation", "cutout")) -> None:
        unknown = [group for group in policy if group not in _POLICIES]
        if unknown or not policy:
            raise ValueError(f"DiffAugment: unknown or empty policy {list(policy)}; groups: {', '.join(_POLICIES)}")
        self.policy = tuple(policy)
        self._ops = [diffaugment_op(name) for group in self.policy for name in _POLICIES[group]]

    def __call__(self, x: Tensor) -> Tensor:
        _check_input(x)
        for op in self._ops:
            x = op(x)
        return x


class AdaptiveAugment:
    """ADA (Karras et al. 2020): each op applied with probability ``p`` per sample, ``p`` adapted.

    Where applied, an op draws ADA's own law (:mod:`advtune.augment_ops`): the identity stays one of
    the outcomes (a flip with ``p/2``, a non-zero quarter turn with ``3p/4``) and the colour
    parameters are Gaussian / log-normal, so the augmentation does not leak for any ``p < 1``.

    Args:
        ops: op names from ``ADA_OPS``; default: ADA's pixel blitting (xflip, rotate90,
            integer translation) and two colour ops.
        initial_p: ``p`` at the start.
        target: the ``r_t`` to hold (0.6 in StyleGAN2-ADA); ``None`` keeps ``p`` fixed.
        interval: D steps between adjustments (4 in StyleGAN2-ADA).
        speed_images: images after which ``p`` can have moved by 1 (500k in StyleGAN2-ADA; shorter
            runs on small data sets want fewer).
    """

    def __init__(
        self,
        ops: Sequence[str] = ("xflip", "rotate90", "translation", "brightness", "contrast"),
        initial_p: float = 0.0,
        target: float | None = 0.6,
        interval: int = 4,
        speed_images: int = 500_000,
    ) -> None:
        if not ops:
            raise ValueError("AdaptiveAugment: ops must name at least one op")
        self._ops = [ada_op(name) for name in ops]
        if not 0.0 <= initial_p <= 1.0:
            raise ValueError(f"AdaptiveAugment: initial_p must be in [0, 1], got {initial_p}")
        if target is not None and not -1.0 < target < 1.0:
            raise ValueError(f"AdaptiveAugment: target must be in (-1, 1) or null, got {target}")
        if interval < 1 or speed_images < 1:
            raise ValueError(f"AdaptiveAugment: interval and speed_images must be >= 1, got {interval}, {speed_images}")
        self.ops = tuple(ops)
        self.target = target
        self.interval = int(interval)
        self.speed_images = int(speed_images)
        self.p = torch.tensor(float(initial_p))
        self._sign_sum = torch.zeros(())
        self._observed = 0  # D steps since the last adjustment (host counter: no sync)

    def __call__(self, x: Tensor) -> Tensor:
        _check_input(x)
        self.p = self.p.to(x.device)
        for op in self._ops:
            x = op(x, torch.rand(x.shape[0], device=x.device) < self.p)
        return x

    def observe(self, real_sign: Tensor, batch_size: int) -> None:
        """Accumulate ``r_t`` of one D step (``real_sign``: ``E[sign(D(real))]``); adjust ``p`` every ``interval``."""
        if self.target is None:
            return
        self._sign_sum = self._sign_sum.to(real_sign.device) + real_sign.detach().float()
        self._observed += 1
        if self._observed < self.interval:
            return
        r_t = self._sign_sum / self.interval
        images = batch_size * self.interval
        if dist.is_available() and dist.is_initialized():  # every rank adapts the same p
            dist.all_reduce(r_t)
            r_t = r_t / dist.get_world_size()
            images *= dist.get_world_size()
        # nan_to_num: a non-finite r_t (a skipped, NaN step in the interval) leaves p as it was.
        step = torch.nan_to_num(torch.sign(r_t - self.target)) * images / self.speed_images
        self.p = (self.p.to(r_t.device) + step).clamp(0.0, 1.0)
        self._sign_sum = torch.zeros_like(self._sign_sum)
        self._observed = 0

    def state_dict(self) -> dict[str, Any]:
        """``p`` and the pending accumulation, for an exact resume (tensors and ints only)."""
        return {"p": self.p.detach().clone(), "sign_sum": self._sign_sum.detach().clone(), "observed": self._observed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p = state["p"].clone().float()
        self._sign_sum = state["sign_sum"].clone().float()
        self._observed = int(state["observed"])
