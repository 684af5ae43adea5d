"""DiffAugment ops (known transformations), ADA's adaptive p (known steps), and where the calculator applies them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advtune import AdversarialLossCalculator
from advtune.augment import AUGMENT_OPS, AdaptiveAugment, DiffAugment, augment_op


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Reference: ``x`` moved down by ``dy`` and right by ``dx``, zero fill."""
    h, w = x.shape[-2:]
    return F.pad(x, (1, 1, 1, 1))[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]


def test_translation_moves_each_sample_by_at_most_an_eighth_with_zero_fill():
    torch.manual_seed(0)
    x = torch.arange(1.0, 65.0).reshape(1, 1, 8, 8).expand(64, 1, 8, 8)
    out = augment_op("translation")(x)  # 8 * 0.125 = 1 pixel at most
    shifts = set()
    for sample in out:
        matches = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if torch.equal(sample, _shifted(x[0], dy, dx))]
        assert len(matches) == 1
        shifts.add(matches[0])
    assert len(shifts) == 9  # every shift occurs in 64 draws


def test_cutout_zeroes_one_square_of_half_the_side_at_most():
    torch.manual_seed(0)
    out = augment_op("cutout")(torch.ones(32, 1, 8, 8))
    for sample in out[:, 0]:
        rows, cols = torch.nonzero(sample == 0, as_tuple=True)
        assert 1 <= len(rows) <= 16 and set(sample.unique().tolist()) <= {0.0, 1.0}
        assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # one rectangle
        assert rows.max() - rows.min() < 4 and cols.max() - cols.min() < 4
    assert (out == 0).flatten(1).sum(1).max() == 16  # a square fully inside: 4 x 4


def test_color_ops_known_forms():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 4, 4)
    offset = augment_op("brightness")(x) - x  # one offset in [-0.5, 0.5) per sample
    assert torch.allclose(offset, offset[:, :1, :1, :1].expand_as(offset)) and offset.abs().max() <= 0.5
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    scale = (augment_op("contrast")(x) - mean) / (x - mean)  # (x - mean) * k + mean, k in [0.5, 1.5)
    assert torch.allclose(scale, scale[:, :1, :1, :1].expand_as(scale), atol=1e-4)
    assert 0.5 <= scale.min() and scale.max() < 1.5
    grey = torch.randn(4, 1, 4, 4)
    assert torch.allclose(augment_op("saturation")(grey), grey)  # one channel has no saturation


def test_rotate90_and_xflip():
    torch.manual_seed(0)
    x = torch.arange(16.0).reshape(1, 1, 4, 4).expand(32, 1, 4, 4)
    out = augment_op("rotate90")(x)
    turns = [[k for k in (1, 2, 3) if torch.equal(s, torch.rot90(x[0], k, dims=(1, 2)))] for s in out]
    assert all(len(t) == 1 for t in turns) and {t[0] for t in turns} == {1, 2, 3}
    assert torch.equal(augment_op("xflip")(x), x.flip(3))
    wide = torch.randn(2, 1, 4, 8)  # not square: a half turn keeps the shape
    assert torch.equal(augment_op("rotate90")(wide), torch.rot90(wide, 2, dims=(2, 3)))


def test_diffaugment_is_differentiable_and_checks_its_input():
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    DiffAugment()(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs \\(B, C, H, W\\)"):
        DiffAugment()(torch.zeros(4, 64))
    with pytest.raises(ValueError, match="unknown or empty policy"):
        DiffAugment(["colour"])
    with pytest.raises(ValueError, match="unknown augment op 'blur'; valid: " + ", ".join(AUGMENT_OPS)):
        AdaptiveAugment(ops=["blur"])


def test_ada_applies_each_op_with_probability_p():
    x = torch.randn(8, 1, 4, 4)
    assert torch.equal(AdaptiveAugment(initial_p=0.0, target=None)(x), x)
    assert torch.equal(AdaptiveAugment(ops=["xflip"], initial_p=1.0, target=None)(x), x.flip(3))
    torch.manual_seed(0)
    half = AdaptiveAugment(ops=["xflip"], initial_p=0.5, target=None)(torch.arange(4.0).reshape(1, 1, 1, 4).expand(4000, 1, 1, 4))
    assert (half[:, 0, 0, 0] == 3).float().mean().item() == pytest.approx(0.5, abs=0.03)


def test_ada_adjusts_p_by_the_sign_of_r_t_minus_target():
    # every 2 D steps: p += sign(r_t - 0.6) * batch 10 * interval 2 / 1000 images = +-0.02, clamped to [0, 1]
    ada = AdaptiveAugment(target=0.6, interval=2, speed_images=1000)
    ada.observe(torch.tensor(1.0), batch_size=10)
    assert ada.p.item() == 0.0  # adjusted only every `interval` steps
    ada.observe(torch.tensor(0.8), batch_size=10)  # r_t = 0.9 > 0.6: the D overfits
    assert ada.p.item() == pytest.approx(0.02)
    saved = ada.state_dict()
    for _ in range(4):
        ada.observe(torch.tensor(0.0), batch_size=10)  # r_t = 0 < 0.6: twice -0.02
    assert ada.p.item() == 0.0
    ada.load_state_dict(saved)
    assert ada.p.item() == pytest.approx(0.02)
    fixed = AdaptiveAugment(initial_p=0.3, target=None)
    fixed.observe(torch.tensor(1.0), batch_size=10)
    assert fixed.p.item() == pytest.approx(0.3)


def test_ada_p_survives_a_non_finite_r_t():
    """A NaN D step (its update skipped) leaves p where it was instead of making it NaN for good."""
    ada = AdaptiveAugment(initial_p=0.5, target=0.6, interval=1, speed_images=1000)
    ada.observe(torch.tensor(float("nan")), batch_size=10)
    assert ada.p.item() == pytest.approx(0.5)
    ada.observe(torch.tensor(1.0), batch_size=10)
    assert ada.p.item() == pytest.approx(0.51)


class _LinearD(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1, 1, 4, 4))

    def forward(self, x, **cond):
        return [(x * self.w).flatten(1).sum(1, keepdim=True)], [[x]]


class _Spy:
    def __init__(self):
        self.calls = []

    def __call__(self, x):
        self.calls.append(x.requires_grad)
        return x.flip(3)


@pytest.mark.parametrize("loss_type", ["hinge", "relativistic"])
def test_calculator_augments_real_and_fake_for_d_and_fake_for_g(loss_type):
    real, fake = torch.rand(4, 1, 4, 4) + 1, torch.randn(4, 1, 4, 4, requires_grad=True)
    spy = _Spy()
    calc = AdversarialLossCalculator(loss_type=loss_type, augment=spy)
    calc.compute_discriminator_loss(_LinearD(), real, fake, 0)
    assert spy.calls == [False, False]  # real and fake, both detached
    spy.calls.clear()
    calc.compute_generator_loss(_LinearD().requires_grad_(False), real, fake, 0)["loss"].backward()
    # the fake keeps its graph through the augmentation; the relativistic G also scores (augmented) reals
    assert spy.calls == ([True, False] if loss_type == "relativistic" else [True])
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_calculator_feeds_ada_with_r_t_of_the_real_logits():
    ada = AdaptiveAugment(ops=["xflip"], target=0.6, interval=1, speed_images=64)
    calc = AdversarialLossCalculator(loss_type="hinge", augment=ada)
    real, fake = torch.rand(4, 1, 4, 4) + 1, torch.randn(4, 1, 4, 4)  # every real logit > 0: r_t = 1
    out = calc.compute_discriminator_loss(_LinearD(), real, fake, 0)
    assert out["d/r_t"].item() == 1.0 and ada.p.item() == pytest.approx(4 / 64)
    assert out["d/ada_p"].item() == pytest.approx(4 / 64)  # logged after the adjustment
    assert calc.state_dict()["augment"]["p"].item() == pytest.approx(4 / 64)


def test_ada_on_latents_with_the_latent_discriminator_and_r1():
    from advtune.discriminators import LatentDiscriminator

    torch.manual_seed(0)
    disc = LatentDiscriminator(in_channels=4, base_channels=8, num_layers=2, embedding_dim=16)
    ada = AdaptiveAugment(initial_p=0.5, interval=1, speed_images=100)
    calc = AdversarialLossCalculator(loss_type="hinge", r1_weight=1.0, augment=ada)
    real, fake = torch.randn(4, 4, 8, 16), torch.randn(4, 4, 8, 16, requires_grad=True)  # non-square latents
    out = calc.compute_discriminator_loss(disc, real, fake, 0, sigma=torch.full((4,), 0.5))
    out["loss"].backward()
    assert torch.isfinite(out["d/r1"]) and ada.p.item() != 0.5
    calc.compute_generator_loss(disc.requires_grad_(False), real, fake, 0, sigma=torch.full((4,), 0.5))["loss"].backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
