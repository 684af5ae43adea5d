"""Known values of every GAN criterion, the reduction convention, and bad input."""

import math

import pytest
import torch

from advtune.losses import (
    GAN_LOSS_TYPES,
    discriminator_accuracy,
    discriminator_loss,
    generator_loss,
    hinge_discriminator_loss,
    non_saturating_generator_loss,
    real_sign_mean,
    vanilla_generator_loss,
)

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# vanilla / non_saturating D: mean softplus(-r) + mean softplus(f)
#   softplus(-2) = ln(1 + e^-2) = 0.1269280, softplus(1) = ln(1 + e) = 1.3132617 -> mean 0.7200948
#   softplus(0.5) = ln(2.6487213) = 0.9740770, softplus(-3) = ln(1.0497871) = 0.0485874 -> mean 0.5113322
#   D = 0.7200948 + 0.5113322 = 1.2314270
# vanilla G (saturating): -mean softplus(f) = -0.5113322
# non_saturating G: mean softplus(-f) = (softplus(-0.5) + softplus(3)) / 2 = (0.4740770 + 3.0485874) / 2 = 1.7613322
# hinge D: mean relu(1 - r) = (0 + 2) / 2 = 1;  mean relu(1 + f) = (1.5 + 0) / 2 = 0.75  -> D = 1.75
# hinge G: -mean f = -(0.5 - 3) / 2 = 1.25
# lsgan D: mean (r - 1)^2 = (1 + 4) / 2 = 2.5;  mean f^2 = (0.25 + 9) / 2 = 4.625  -> D = 7.125
# lsgan G: mean (f - 1)^2 = (0.25 + 16) / 2 = 8.125
# wgan D: mean f - mean r = -1.25 - 0.5 = -1.75;  G: -mean f = 1.25
# relativistic D: mean softplus(f - r) = (softplus(-1.5) + softplus(-2)) / 2 = (0.2014133 + 0.1269280) / 2
#   = 0.1641707;  G: mean softplus(r - f) = (softplus(1.5) + softplus(2)) / 2 = (1.7014133 + 2.1269280) / 2 = 1.9141707
EXPECTED = {
    "vanilla": (1.2314270, -0.5113322),
    "non_saturating": (1.2314270, 1.7613322),
    "hinge": (1.75, 1.25),
    "lsgan": (7.125, 8.125),
    "wgan": (-1.75, 1.25),
    "relativistic": (0.1641707, 1.9141707),
}


def test_every_loss_type_has_a_known_value():
    assert set(EXPECTED) == set(GAN_LOSS_TYPES)
    # cross-check the hand numbers of the softplus terms
    assert EXPECTED["vanilla"][0] == pytest.approx((softplus(-2) + softplus(1) + softplus(0.5) + softplus(-3)) / 2, abs=1e-6)


@pytest.mark.parametrize("loss_type", sorted(EXPECTED))
def test_known_values_single_tensor_and_list(loss_type):
    d_expected, g_expected = EXPECTED[loss_type]
    assert discriminator_loss(REAL, FAKE, loss_type).item() == pytest.approx(d_expected, abs=1e-6)
    assert generator_loss(FAKE, loss_type, real_logits=REAL).item() == pytest.approx(g_expected, abs=1e-6)
    # a list of one sub-discriminator is the same as the bare tensor
    assert discriminator_loss([REAL], [FAKE], loss_type).item() == pytest.approx(d_expected, abs=1e-6)
    assert generator_loss([FAKE], loss_type, real_logits=[REAL]).dim() == 0


def test_relativistic_pairs_real_with_fake_and_needs_real_logits_for_g():
    with pytest.raises(ValueError, match="pairs each fake with a real"):
        generator_loss(FAKE, "relativistic")
    # the real logits are constants for G: no gradient reaches them
    real, fake = REAL.clone().requires_grad_(True), FAKE.clone().requires_grad_(True)
    generator_loss(fake, "relativistic", real_logits=real).backward()
    assert real.grad is None and fake.grad is not None
    # D is right on a pair when r > f: (2 > 0.5) yes, (-1 > -3) yes -> both accuracies 1; r_t = 1
    assert [a.item() for a in discriminator_accuracy(REAL, FAKE, "relativistic")] == [1.0, 1.0]
    assert real_sign_mean(REAL, FAKE, "relativistic").item() == 1.0


def test_mean_over_elements_then_over_sub_discriminators():
    # sub-discriminator 2 has patch logits (2, 1, 2, 1): real all 1, fake all 0.
    # hinge D there = mean relu(1 - 1) + mean relu(1 + 0) = 0 + 1 = 1; sub 1 is 1.75 (above).
    # mean over sub-discriminators = (1.75 + 1) / 2 = 1.375 (a sum would give 2.75)
    real = [REAL, torch.ones(2, 1, 2, 1)]
    fake = [FAKE, torch.zeros(2, 1, 2, 1)]
    assert discriminator_loss(real, fake, "hinge").item() == pytest.approx(1.375)
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(1.375)
    # hinge G: sub 1 = 1.25, sub 2 = -mean 0 = 0 -> 0.625
    assert generator_loss(fake, "hinge").item() == pytest.approx(0.625)


def test_extreme_logits_stay_finite_and_non_saturating_keeps_gradient():
    real = torch.tensor([1000.0])
    fake = torch.tensor([-1000.0])
    assert discriminator_loss(real, fake, "vanilla").item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(generator_loss(fake, "non_saturating"))
    assert generator_loss(fake, "non_saturating").item() == pytest.approx(1000.0)
    # At a confidently rejected fake (logit -10) the saturating loss has almost no gradient
    # (sigmoid(-10) = 4.5e-5) while the non-saturating one has sigmoid(10) = 0.99995.
    f1 = torch.tensor([-10.0], requires_grad=True)
    vanilla_generator_loss(f1).backward()
    f2 = torch.tensor([-10.0], requires_grad=True)
    non_saturating_generator_loss(f2).backward()
    assert abs(f1.grad.item()) == pytest.approx(4.5398e-5, rel=1e-3)
    assert f2.grad.item() == pytest.approx(-0.9999546, abs=1e-6)


def test_accuracy_thresholds():
    # threshold 0: real > 0 -> [2] of [2, -1] = 0.5; fake < 0 -> [-3] of [0.5, -3] = 0.5
    real_acc, fake_acc = discriminator_accuracy(REAL, FAKE, "hinge")
    assert (real_acc.item(), fake_acc.item()) == (0.5, 0.5)
    # lsgan threshold 0.5: real [0.6, 0.4] -> 0.5; fake [0.4, -3] -> both < 0.5 -> 1.0
    real_acc, fake_acc = discriminator_accuracy(torch.tensor([0.6, 0.4]), torch.tensor([0.4, -3.0]), "lsgan")
    assert (real_acc.item(), fake_acc.item()) == (0.5, 1.0)
    # the same fake under threshold 0: only -3 is below -> 0.5
    assert discriminator_accuracy(REAL, torch.tensor([0.4, -3.0]), "vanilla")[1].item() == 0.5
    # mean over sub-discriminators: sub 2 all correct -> (0.5 + 1) / 2
    real_acc, _ = discriminator_accuracy([REAL, torch.ones(3)], [FAKE, -torch.ones(3)], "wgan")
    assert real_acc.item() == pytest.approx(0.75)
    assert not real_acc.requires_grad


def test_real_sign_mean_is_adas_r_t():
    # sign(r - 0) for r = [2, -1] -> [1, -1] -> 0; lsgan threshold 0.5: [0.6, 0.7, 0.4] -> (1 + 1 - 1) / 3
    assert real_sign_mean(REAL, FAKE, "hinge").item() == 0.0
    assert real_sign_mean(torch.tensor([0.6, 0.7, 0.4]), torch.zeros(3), "lsgan").item() == pytest.approx(1 / 3)
    # mean over sub-discriminators: (0 + 1) / 2
    assert real_sign_mean([REAL, torch.ones(2, 1, 2, 2)], [FAKE, torch.zeros(2, 1, 2, 2)], "wgan").item() == 0.5


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="valid names: vanilla, non_saturating, hinge, lsgan, wgan, relativistic"):
        discriminator_loss(REAL, FAKE, "minimax")
    with pytest.raises(ValueError, match="valid names"):
        generator_loss(FAKE, "bce")
    with pytest.raises(ValueError, match="valid names"):
        discriminator_accuracy(REAL, FAKE, "nope")
    with pytest.raises(ValueError, match="real_logits has 2 sub-discriminators but fake_logits has 1"):
        discriminator_loss([REAL, REAL], [FAKE], "hinge")
    with pytest.raises(ValueError, match="empty list"):
        generator_loss([], "hinge")
    with pytest.raises(TypeError, match=r"fake_logits\[1\] must be a Tensor"):
        generator_loss([FAKE, 1.0], "hinge")
