"""Feature matching on tiny feature maps with hand-computed values."""

import pytest
import torch

from advtune.losses import feature_matching_loss


def features():
    # sub-discriminator 0: layers [1, 2] vs [0, 0] and [[0, 4]] vs [[0, 2]]; sub 1: [3] vs [1]
    real = [[torch.tensor([1.0, 2.0]), torch.tensor([[0.0, 4.0]])], [torch.tensor([3.0])]]
    fake = [[torch.tensor([0.0, 0.0]), torch.tensor([[0.0, 2.0]])], [torch.tensor([1.0])]]
    return real, fake


def test_mean_normalization_known_value():
    # layer terms mean|r - f|: (1 + 2)/2 = 1.5, (0 + 2)/2 = 1, |3 - 1| = 2 -> mean over 3 layers = 4.5 / 3 = 1.5
    real, fake = features()
    assert feature_matching_loss(real, fake).item() == pytest.approx(1.5)


def test_relative_normalization_known_value():
    # divide each by mean|r|: 1.5 / 1.5 = 1, 1 / 2 = 0.5, 2 / 3 -> (1 + 0.5 + 0.6667) / 3 = 0.7222
    real, fake = features()
    assert feature_matching_loss(real, fake, normalization="relative").item() == pytest.approx(0.7222222, rel=1e-6)


def test_real_features_are_detached_targets():
    real = [[torch.tensor([1.0, 2.0], requires_grad=True)]]
    fake = [[torch.tensor([0.0, 3.0], requires_grad=True)]]
    feature_matching_loss(real, fake).backward()
    assert real[0][0].grad is None
    # d mean|r - f| / df = -sign(r - f) / 2 = [-0.5, 0.5]
    assert torch.allclose(fake[0][0].grad, torch.tensor([-0.5, 0.5]))


def test_identical_features_give_zero():
    real, _ = features()
    assert feature_matching_loss(real, [[t.clone() for t in layers] for layers in real]).item() == 0.0


def test_mismatches_name_the_sub_discriminator_and_layer():
    real, fake = features()
    with pytest.raises(ValueError, match="real_features has 2 sub-discriminators, fake_features has 1"):
        feature_matching_loss(real, fake[:1])
    with pytest.raises(ValueError, match="sub-discriminator 1 has 1 real feature maps but 2 fake"):
        feature_matching_loss(real, [fake[0], fake[1] * 2])
    with pytest.raises(ValueError, match=r"sub-discriminator 0, layer 1: real shape \(1, 2\) != fake shape \(2,\)"):
        feature_matching_loss(real, [[fake[0][0], torch.zeros(2)], fake[1]])
    with pytest.raises(ValueError, match="valid: mean, relative"):
        feature_matching_loss(real, fake, normalization="sum")
    with pytest.raises(ValueError, match="no feature maps"):
        feature_matching_loss([[]], [[]])
