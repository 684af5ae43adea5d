"""AdversarialLossCalculator: warm-up, weights, penalties, feature matching, adaptive weight."""

import pytest
import torch
from torch import nn

from advtune import AdversarialLossCalculator
from advtune.augment import AdaptiveAugment
from advtune.losses import discriminator_loss, feature_matching_loss, generator_loss


class LinearD(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[1.0, 2.0, 2.0]]))

    def forward(self, x, **cond):
        h = x * self.w
        return [h.sum(dim=1, keepdim=True)], [[h]]


@pytest.fixture
def data():
    torch.manual_seed(0)
    return torch.randn(4, 3), torch.randn(4, 3, requires_grad=True)


def test_generator_terms_exactly_zero_before_warmup(data):
    real, fake = data
    calc = AdversarialLossCalculator(warmup_steps=10, feature_matching_weight=1.0)
    base = (fake**2).mean()
    out = calc.compute_generator_loss(LinearD(), real, fake, global_step=9, base_loss=base)
    assert out["g/adv"].item() == 0.0 and out["g/feat"].item() == 0.0
    assert out["loss"] is base
    after = calc.compute_generator_loss(LinearD(), real, fake, global_step=10, base_loss=base)
    assert after["g/adv"].item() != 0.0


def test_warmup_modes(data):
    assert AdversarialLossCalculator(warmup_steps=5).discriminator_active(0)  # D keeps training: not cold later
    full = AdversarialLossCalculator(warmup_steps=5, warmup_mode="full")
    assert not full.discriminator_active(4) and full.discriminator_active(5)


def test_generator_loss_matches_formula(data):
    real, fake = data
    d = LinearD()
    calc = AdversarialLossCalculator(adversarial_weight=0.5, feature_matching_weight=2.0, loss_type="hinge")
    base = torch.tensor(1.5)
    out = calc.compute_generator_loss(d, real, fake, 0, base_loss=base, adversarial_scale=0.5)
    logits, feats = d(fake)
    with torch.no_grad():
        _, real_feats = d(real)
    expected = 1.5 + 0.5 * 0.5 * generator_loss(logits, "hinge") + 2.0 * 0.5 * feature_matching_loss(real_feats, feats)
    torch.testing.assert_close(out["loss"], expected)
    out["loss"].backward()
    assert fake.grad is not None  # the gradient reaches the generator's output


def test_discriminator_loss_detaches_fake_and_adds_r1(data):
    real, fake = data
    d = LinearD()
    calc = AdversarialLossCalculator(loss_type="lsgan", r1_weight=4.0)
    out = calc.compute_discriminator_loss(d, real, fake, 0)
    # R1 on a linear D is ||w||^2 = 9 for every sample; gamma/2 = 2 -> +18.
    assert out["d/r1"].item() == pytest.approx(9.0)
    expected = discriminator_loss(d(real)[0], d(fake.detach())[0], "lsgan") + 18.0
    torch.testing.assert_close(out["loss"], expected)
    out["loss"].backward()
    assert fake.grad is None  # no gradient from the D loss reaches the generator


def test_lazy_regularization_gain(data):
    real, fake = data
    calc = AdversarialLossCalculator(r1_weight=2.0, regularization_interval=4)
    on = calc.compute_discriminator_loss(LinearD(), real, fake, global_step=8)
    off = calc.compute_discriminator_loss(LinearD(), real, fake, global_step=9)
    assert "d/r1" not in off
    # every 4th step, multiplied by 4: 4 * (2/2) * 9 = 36
    assert (on["loss"] - off["loss"]).item() == pytest.approx(36.0)


def _linear_generator():
    """``(last layer, input, fake = last(input), base loss = mean fake²)``."""
    torch.manual_seed(0)
    last = nn.Linear(3, 3)
    x = torch.randn(4, 3)
    fake = last(x)
    return last, x, fake, (fake**2).mean()


def test_adaptive_weight_scales_adversarial_term():
    last, x, fake, base = _linear_generator()
    d = LinearD()
    calc = AdversarialLossCalculator(use_adaptive_weight=True, loss_type="wgan")
    out = calc.compute_generator_loss(d, x, fake, 0, base_loss=base, last_layer=last.weight)
    g_base = torch.autograd.grad(base, last.weight, retain_graph=True)[0]
    g_adv = torch.autograd.grad(generator_loss(d(fake)[0], "wgan"), last.weight, retain_graph=True)[0]
    expected = g_base.norm() / (g_adv.norm() + 1e-4)
    assert out["g/adaptive_weight"].item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="needs base_loss and last_layer"):
        calc.compute_generator_loss(d, x, fake, 0)


def test_metrics_are_detached_scalars(data):
    real, fake = data
    out = AdversarialLossCalculator(gp_weight=10.0).compute_discriminator_loss(LinearD(), real, fake, 0)
    for key in ("d/loss", "d/real_acc", "d/fake_acc", "d/logits_real", "d/logits_fake", "d/gp", "d/total"):
        assert out[key].dim() == 0 and not out[key].requires_grad, key


@pytest.mark.parametrize(("kwargs", "match"), [({"loss_type": "bce"}, "valid: vanilla"), ({"warmup_mode": "x"}, "warmup_mode"),
                                               ({"adversarial_weight": -1}, "adversarial_weight"),
                                               ({"r1_weight": float("nan")}, "r1_weight must be >= 0, got nan"),
                                               ({"regularization_interval": 0}, "regularization_interval"),
                                               ({"loss_type": "wgan", "augment": AdaptiveAugment()}, "nothing for loss_type=wgan")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdversarialLossCalculator(**kwargs)


def test_adaptive_weight_uses_the_unannealed_base_loss_so_pure_adversarial_still_trains_g():
    """Issue 9, fix 3: at base weight 0 the adaptive weight must not vanish with the base loss."""
    torch.manual_seed(0)
    last = nn.Linear(3, 3)
    x = torch.randn(4, 3)
    calc = AdversarialLossCalculator(use_adaptive_weight=True, loss_type="wgan")
    results = {}
    for base_weight in (1.0, 0.0):
        last.zero_grad()
        fake = last(x)
        out = calc.compute_generator_loss(LinearD(), x, fake, 0, base_loss=(fake**2).mean(), last_layer=last.weight,
                                          base_weight=base_weight)
        out["loss"].backward()
        results[base_weight] = (out, last.weight.grad.clone())
    (annealed, grad) = results[0.0]
    assert annealed["g/adaptive_weight"].item() == pytest.approx(results[1.0][0]["g/adaptive_weight"].item())
    assert annealed["g/adaptive_weight"].item() > 0 and grad.abs().sum() > 0  # the generator still learns
    # the loss is the adversarial term alone: w * L_G
    torch.testing.assert_close(annealed["loss"], annealed["g/adaptive_weight"] * annealed["g/adv"])


def test_grad_ratio_is_weighted_adversarial_over_weighted_base_gradient_norm():
    last, x, fake, base = _linear_generator()
    calc = AdversarialLossCalculator(adversarial_weight=0.5, loss_type="wgan")
    out = calc.compute_generator_loss(LinearD(), x, fake, 0, base_loss=base, last_layer=last.weight,
                                      base_weight=0.25, measure_gradients=True)
    g_base = torch.autograd.grad(base, last.weight, retain_graph=True)[0].norm()
    g_adv = torch.autograd.grad(generator_loss(LinearD()(fake)[0], "wgan"), last.weight)[0].norm()
    assert out["g/grad_ratio"].item() == pytest.approx((0.5 * g_adv / (0.25 * g_base)).item(), rel=1e-5)
    assert "g/grad_ratio" not in calc.compute_generator_loss(LinearD(), x, fake, 0, base_loss=base, last_layer=last.weight)


def test_metrics_only_when_asked(data):
    real, fake = data
    calc = AdversarialLossCalculator(r1_weight=1.0)
    d = calc.compute_discriminator_loss(LinearD(), real, fake, 0, with_metrics=False)
    g = calc.compute_generator_loss(LinearD(), real, fake, 0, with_metrics=False)
    assert set(d) == {"loss", "d/loss", "d/total"} and set(g) == {"loss", "g/total"}
    full = calc.compute_discriminator_loss(LinearD(), real, fake, 0)
    assert {"d/real_acc", "d/fake_acc", "d/logits_real", "d/logits_fake", "d/r_t", "d/r1"} <= set(full)
    torch.testing.assert_close(d["loss"], full["loss"])


def test_lecam_adds_its_weighted_penalty_with_bias_corrected_anchors(data):
    real, fake = data
    d = LinearD()
    plain = AdversarialLossCalculator(loss_type="hinge").compute_discriminator_loss(d, real, fake, 0)
    calc = AdversarialLossCalculator(loss_type="hinge", lecam_weight=0.3)
    out = calc.compute_discriminator_loss(d, real, fake, 0)
    # first step: the anchors are exactly this batch's mean logits
    r, f = d(real)[0][0].detach(), d(fake.detach())[0][0].detach()
    expected = torch.relu(r - f.mean()).square().mean() + torch.relu(r.mean() - f).square().mean()
    assert out["d/lecam"].item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(out["loss"], plain["loss"] + 0.3 * out["d/lecam"])
    assert calc.state_dict()["lecam"]["steps"] == 1


def test_relativistic_generator_loss_pairs_fakes_with_reals(data):
    real, fake = data
    d = LinearD()
    out = AdversarialLossCalculator(loss_type="relativistic").compute_generator_loss(d, real, fake, 0)
    expected = torch.nn.functional.softplus(d(real)[0][0] - d(fake)[0][0]).mean()
    torch.testing.assert_close(out["g/adv"], expected.detach())
