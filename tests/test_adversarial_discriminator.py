"""The discriminator side of the calculator: R1/R2 differentiate at the un-augmented input with the
augmentation inside D (StyleGAN2-ADA), at the scored tensor for D's own re-noising; known values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advtune import AdversarialLossCalculator
from advtune.augment import AdaptiveAugment


class _LinearD(nn.Module):
    """``D(x) = Σ w·x``: the critic's gradient at the scored tensor is ``w`` for every sample."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1.0, 2.0, 16).reshape(1, 1, 4, 4))

    def forward(self, x, **cond):
        return [(x * self.w).flatten(1).sum(1, keepdim=True)], [[x]]


def _double(x):  # a contrast of 2: the augmentation's Jacobian is 2·I
    return 2.0 * x


@pytest.mark.parametrize("penalty", ["r1", "r2"])
def test_penalty_differentiates_through_the_augmentation(penalty):
    """‖∇_x D(A(x))‖² = ‖2w‖² = 4‖w‖² (StyleGAN2-ADA); at the augmented input (the old path) it read ‖w‖²."""
    disc = _LinearD()
    real, fake = torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    weights = {f"{penalty}_weight": 1.0}
    plain = AdversarialLossCalculator(**weights).compute_discriminator_loss(disc, real, fake)
    augmented = AdversarialLossCalculator(**weights, augment=_double).compute_discriminator_loss(disc, real, fake)
    squared_w = disc.w.detach().square().sum().item()
    assert plain[f"d/{penalty}"].item() == pytest.approx(squared_w)
    assert augmented[f"d/{penalty}"].item() == pytest.approx(4 * squared_w)
    augmented["loss"].backward()  # the penalty still trains D: d(γ/2 · 4 Σ w²)/dw = 4 w, plus the hinge terms
    assert disc.w.grad is not None and torch.isfinite(disc.w.grad).all()


def test_the_penalty_reaches_d_parameters_with_the_augmented_gradient():
    """d/dw of γ/2 · ‖2w‖² is 4γ·w: the double backward runs through the augmentation."""
    disc = _LinearD()
    calc = AdversarialLossCalculator(loss_type="wgan", r1_weight=1.0, augment=_double)
    real, fake = torch.zeros(4, 1, 4, 4), torch.zeros(4, 1, 4, 4)  # the wgan terms: 2·(w·0) → no gradient
    calc.compute_discriminator_loss(disc, real, fake)["loss"].backward()
    torch.testing.assert_close(disc.w.grad, 4 * disc.w.detach())


def test_latent_discriminator_r1_with_its_re_noising_and_ada_ops():
    """With the latent D's own re-noising: a flip moves pixels only, so R1(A = flip at x) equals R1 without
    A at flip(x); a contrast of 2 scales the penalty by 4 — the same draws (seeded) for both."""
    from advtune.discriminators import LatentDiscriminator

    torch.manual_seed(0)
    disc = LatentDiscriminator(in_channels=4, base_channels=8, num_layers=2, embedding_dim=16)
    real, fake, sigma = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8), torch.full((4,), 0.5)

    def r1(augment, x):
        torch.manual_seed(1)
        calc = AdversarialLossCalculator(r1_weight=1.0, augment=augment)
        return calc.compute_discriminator_loss(disc, x, fake, sigma=sigma)["d/r1"].item()

    assert r1(lambda x: x.flip(3), real) == pytest.approx(r1(None, real.flip(3)), rel=1e-5)
    assert r1(_double, real) == pytest.approx(4 * r1(None, 2 * real), rel=1e-5)


def test_ada_with_r1_trains_and_keeps_its_p_feedback():
    torch.manual_seed(0)
    ada = AdaptiveAugment(ops=["xflip", "rotate90", "translation", "brightness", "contrast", "saturation", "cutout"],
                          initial_p=0.5, interval=1, speed_images=100)
    disc = _LinearD()
    out = AdversarialLossCalculator(r1_weight=1.0, r2_weight=1.0, augment=ada).compute_discriminator_loss(
        disc, torch.randn(8, 1, 4, 4) + 3, torch.randn(8, 1, 4, 4))
    out["loss"].backward()
    assert torch.isfinite(out["d/r1"]) and torch.isfinite(out["d/r2"])
    assert ada.p.item() == pytest.approx(0.5 + (0.08 if out["d/r_t"] > 0.6 else -0.08))  # p += ±8 images / 100
    assert torch.isfinite(disc.w.grad).all()
