"""DiffAugment ops (known transformations), ADA's non-leaking laws (statistical checks against their known
values), ADA's adaptive p (known steps), and where the calculator applies them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advtune import AdversarialLossCalculator
from advtune.augment import ADA_OPS, AdaptiveAugment, DiffAugment, ada_op, diffaugment_op


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Reference: ``x`` moved down by ``dy`` and right by ``dx``, zero fill."""
    h, w = x.shape[-2:]
    return F.pad(x, (1, 1, 1, 1))[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]


def test_translation_moves_each_sample_by_at_most_an_eighth_with_zero_fill():
    torch.manual_seed(0)
    x = torch.arange(1.0, 65.0).reshape(1, 1, 8, 8).expand(64, 1, 8, 8)
    out = diffaugment_op("translation")(x)  # 8 * 0.125 = 1 pixel at most
    shifts = set()
    for sample in out:
        matches = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if torch.equal(sample, _shifted(x[0], dy, dx))]
        assert len(matches) == 1
        shifts.add(matches[0])
    assert len(shifts) == 9  # every shift occurs in 64 draws


def test_cutout_zeroes_one_square_of_half_the_side_at_most():
    torch.manual_seed(0)
    out = diffaugment_op("cutout")(torch.ones(32, 1, 8, 8))
    for sample in out[:, 0]:
        rows, cols = torch.nonzero(sample == 0, as_tuple=True)
        assert 1 <= len(rows) <= 16 and set(sample.unique().tolist()) <= {0.0, 1.0}
        assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # one rectangle
        assert rows.max() - rows.min() < 4 and cols.max() - cols.min() < 4
    assert (out == 0).flatten(1).sum(1).max() == 16  # a square fully inside: 4 x 4


def test_diffaugment_color_ops_known_forms():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 4, 4)
    offset = diffaugment_op("brightness")(x) - x  # one offset in [-0.5, 0.5) per sample
    assert torch.allclose(offset, offset[:, :1, :1, :1].expand_as(offset)) and offset.abs().max() <= 0.5
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    scale = (diffaugment_op("contrast")(x) - mean) / (x - mean)  # (x - mean) * k + mean, k in [0.5, 1.5)
    assert torch.allclose(scale, scale[:, :1, :1, :1].expand_as(scale), atol=1e-4)
    assert 0.5 <= scale.min() and scale.max() < 1.5
    grey = torch.randn(4, 1, 4, 4)
    assert torch.allclose(diffaugment_op("saturation")(grey), grey)  # one channel has no saturation


def _outcomes(out: torch.Tensor, candidates: dict[int, torch.Tensor]) -> list[int]:
    """Which candidate each sample of ``out`` equals (exactly one)."""
    found = [[k for k, c in candidates.items() if torch.equal(sample, c)] for sample in out]
    assert all(len(f) == 1 for f in found)
    return [f[0] for f in found]


def test_ada_geometric_outcomes_include_the_identity():
    """Applied to every sample: a flip half the time, 0/1/2/3 quarter turns a quarter of the time each
    (0/2 half the time each when H != W), as StyleGAN2-ADA draws them."""
    torch.manual_seed(0)
    n, every = 4000, torch.ones(4000, dtype=torch.bool)
    x = torch.arange(16.0).reshape(1, 4, 4)
    flips = _outcomes(ada_op("xflip")(x.expand(n, 1, 4, 4), every), {0: x, 1: x.flip(2)})
    assert sum(flips) / n == pytest.approx(0.5, abs=0.03)
    turns = _outcomes(ada_op("rotate90")(x.expand(n, 1, 4, 4), every), {k: torch.rot90(x, k, (1, 2)) for k in range(4)})
    assert [turns.count(k) / n for k in range(4)] == pytest.approx([0.25] * 4, abs=0.03)
    wide = torch.arange(32.0).reshape(1, 4, 8)  # not square: a half turn keeps the shape
    halves = _outcomes(ada_op("rotate90")(wide.expand(n, 1, 4, 8), every), {0: wide, 2: torch.rot90(wide, 2, (1, 2))})
    assert halves.count(2) / n == pytest.approx(0.5, abs=0.03)
    assert torch.equal(ada_op("rotate90")(x.expand(8, 1, 4, 4), torch.zeros(8, dtype=torch.bool)), x.expand(8, 1, 4, 4))


_GEOMETRIC = [
    ("xflip", (4, 4), lambda x: x.flip(3)),
    ("rotate90", (4, 4), lambda x: torch.rot90(x, 1, (2, 3))),
    ("rotate90", (4, 4), lambda x: torch.rot90(x, 2, (2, 3))),
    ("rotate90", (4, 4), lambda x: torch.rot90(x, 3, (2, 3))),
    ("rotate90", (4, 8), lambda x: torch.rot90(x, 2, (2, 3))),
]


@pytest.mark.parametrize("p", [0.25, 0.5, 0.75, 0.95])
@pytest.mark.parametrize("op, size, transform", _GEOMETRIC, ids=["flip", "rot90", "rot180", "rot270", "wide-rot180"])
def test_ada_geometric_ops_do_not_leak(op, size, transform, p):
    """E[A(x)] − E[A(T x)] = (1 − p)(x − T x) for a flip or turn T: non-zero at every p < 1, so D can still
    tell a mirrored or turned fake from a real one and G gains nothing by producing them (Karras et al.
    2020, sec. 2.2). The old ops (always flip, turns of 90/180/270 only) made it 0 at p = 0.5 and 0.75."""
    torch.manual_seed(0)
    n = 8000
    x = torch.randn(1, 1, *size)
    augment = AdaptiveAugment(ops=[op], initial_p=p, target=None)
    difference = augment(x.expand(n, -1, -1, -1)).mean(0) - augment(transform(x).expand(n, -1, -1, -1)).mean(0)
    expected = (1 - p) * (x - transform(x))[0]
    noise = (2 * x.var() / n) ** 0.5  # standard error of one pixel of the difference (values move, not change)
    torch.testing.assert_close(difference, expected, atol=float(5 * noise), rtol=0)
    assert difference.norm() > 3 * noise * difference.numel() ** 0.5


def test_ada_colour_parameter_laws_match_stylegan2_ada():
    """Sample moments of the drawn parameters: brightness b ~ N(0, 0.2²), contrast log2 c ~ N(0, 0.5²),
    saturation log2 s ~ N(0, 1) (StyleGAN2-ADA's brightness_std, contrast_std, saturation_std); the old
    uniform laws (std 0.29 for b, c in [0.5, 1.5)) fail it."""
    torch.manual_seed(0)
    n, every = 20000, torch.ones(20000, dtype=torch.bool)
    x = torch.rand(1, 3, 2, 2) + 0.5  # positive: contrast scales about 0
    batch = x.expand(n, -1, -1, -1)
    offset = ada_op("brightness")(batch, every) - batch
    assert torch.allclose(offset, offset[:, :1, :1, :1].expand_as(offset), atol=1e-6)  # one value per sample
    b = offset[:, 0, 0, 0]
    assert abs(b.mean().item()) < 4 * 0.2 / n**0.5 and b.std().item() == pytest.approx(0.2, abs=0.006)
    c = (ada_op("contrast")(batch, every) / batch)[:, 0, 0, 0]
    assert abs(c.log2().mean().item()) < 4 * 0.5 / n**0.5 and c.log2().std().item() == pytest.approx(0.5, abs=0.015)
    mean = batch.mean(dim=1, keepdim=True)
    s = ((ada_op("saturation")(batch, every) - mean) / (batch - mean))[:, 0, 0, 0]
    assert abs(s.log2().mean().item()) < 4 / n**0.5 and s.log2().std().item() == pytest.approx(1.0, abs=0.03)
    # the gaussian law's fourth moment too (a uniform of the same std has kurtosis 1.8, not 3)
    assert (b**4).mean().item() / b.var().item() ** 2 == pytest.approx(3.0, abs=0.15)
    none = torch.zeros(n, dtype=torch.bool)
    for name in ADA_OPS:  # not applied: the identity
        assert torch.equal(ada_op(name)(batch, none), batch)


def test_diffaugment_is_differentiable_and_checks_its_input():
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    DiffAugment()(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs \\(B, C, H, W\\)"):
        DiffAugment()(torch.zeros(4, 64))
    with pytest.raises(ValueError, match="unknown or empty policy"):
        DiffAugment(["colour"])
    with pytest.raises(ValueError, match="unknown augment op 'blur'; valid: " + ", ".join(ADA_OPS)):
        AdaptiveAugment(ops=["blur"])


def test_ada_applies_each_op_with_probability_p():
    x = torch.randn(8, 1, 4, 4)
    assert torch.equal(AdaptiveAugment(initial_p=0.0, target=None)(x), x)
    torch.manual_seed(0)
    row = torch.arange(4.0).reshape(1, 1, 1, 4).expand(4000, 1, 1, 4)
    for p in (0.5, 1.0):  # applied with p, then a flip is one of two outcomes: flipped with p / 2
        flipped = AdaptiveAugment(ops=["xflip"], initial_p=p, target=None)(row)[:, 0, 0, 0] == 3
        assert flipped.float().mean().item() == pytest.approx(p / 2, abs=0.03)
    moved = AdaptiveAugment(ops=["brightness"], initial_p=0.3, target=None)(row) != row
    assert moved.flatten(1).all(1).float().mean().item() == pytest.approx(0.3, abs=0.03)


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
