"""R1 / R2 / WGAN-GP on discriminators whose input gradient is known analytically."""

import pytest
import torch
from torch import nn

from advtune.losses import (
    LeCamAnchors,
    critic_values,
    gradient_penalty,
    lazy_regularization_gain,
    lecam_penalty,
    r1_penalty,
    r2_penalty,
)


class LinearCritic(nn.Module):
    """D(x) = w . flatten(x) + b, following the discriminator contract; input gradient is w."""

    def __init__(self, weight, patches: int = 1):
        super().__init__()
        self.linear = nn.Linear(len(weight), 1)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([weight]))
        self.patches = patches

    def forward(self, x, **cond):
        logits = self.linear(x.reshape(x.shape[0], -1))
        # patches > 1: the same logit repeated as a (B, 1, patches, 1) PatchGAN-like map
        return [logits.reshape(-1, 1, 1, 1).expand(-1, 1, self.patches, 1)], [[]]


def test_r1_linear_discriminator_is_squared_weight_norm_and_backpropagates():
    critic = LinearCritic([1.0, 2.0, 2.0])
    x = torch.randn(4, 3, requires_grad=True)
    logits, _ = critic(x)
    penalty = r1_penalty(logits, x)
    # grad_x D = w = [1, 2, 2] for every sample -> ||w||^2 = 1 + 4 + 4 = 9, mean over batch = 9
    assert penalty.item() == pytest.approx(9.0)
    # create_graph=True: d||w||^2 / dw = 2w = [2, 4, 4] reaches the parameters
    penalty.backward()
    assert torch.allclose(critic.linear.weight.grad, torch.tensor([[2.0, 4.0, 4.0]]))


def test_r1_is_per_sample_then_mean_over_batch():
    # D(x) = sum(x^2) per sample -> grad = 2x; x1 = [1, 0] -> ||2x1||^2 = 4, x2 = [0, 2] -> 16; mean = 10
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    logits = x.square().sum(dim=1, keepdim=True)
    assert r1_penalty([logits], x).item() == pytest.approx(10.0)


def test_r1_follows_the_losses_reduction_mean_over_sub_discriminators():
    # two sub-discriminators with weights w1 = [1, 0], w2 = [0, 3]: the per-sample critic is their mean,
    # gradient [0.5, 1.5] -> 0.25 + 2.25 = 2.5 (differentiating the sum would give [1, 3] -> 10)
    x = torch.randn(3, 2, requires_grad=True)
    logits = [LinearCritic([1.0, 0.0])(x)[0][0], LinearCritic([0.0, 3.0])(x)[0][0]]
    assert r1_penalty(logits, x).item() == pytest.approx(2.5)
    assert r2_penalty(logits, x).item() == pytest.approx(2.5)


@pytest.mark.parametrize("copies", [1, 9])
def test_the_same_discriminator_replicated_over_patches_or_sub_discriminators_gives_the_same_r1(copies):
    # issue 9, fix 1: 9 patches used to give 81 x the single-logit value (x^2 of the sum)
    critic = LinearCritic([1.0, 2.0, 2.0], patches=copies)
    x = torch.randn(4, 3, requires_grad=True)
    patch_logits, _ = critic(x)
    assert r1_penalty(patch_logits, x).item() == pytest.approx(9.0)
    single_logits, _ = LinearCritic([1.0, 2.0, 2.0])(x)
    assert r1_penalty(single_logits * copies, x).item() == pytest.approx(9.0)  # the list repeated: copies sub-Ds
    assert r2_penalty(single_logits * copies, x).item() == pytest.approx(9.0)


def test_critic_values_mean_per_sample_then_over_sub_discriminators():
    logits = [torch.tensor([[1.0, 3.0], [0.0, 0.0]]), torch.tensor([[4.0], [2.0]])]
    assert critic_values(logits).tolist() == [3.0, 1.0]  # sample 0: (2 + 4) / 2, sample 1: (0 + 2) / 2


def test_lecam_known_value_and_one_sidedness():
    # real logits [1, 3] against fake anchor 2: relu(-1)^2 + relu(1)^2 -> mean 0.5
    # fake logits [0, -2] against real anchor 0.5: relu(0.5)^2 + relu(2.5)^2 = 0.25 + 6.25 -> mean 3.25
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, -2.0])
    value = lecam_penalty(real, fake, real_anchor=torch.tensor([0.5]), fake_anchor=torch.tensor([2.0]))
    assert value.item() == pytest.approx(3.75)
    # two sub-discriminators: mean of the two (second: all zero once the anchors agree with the logits)
    both = lecam_penalty([real, torch.zeros(2)], [fake, torch.ones(2)], torch.tensor([0.5, 1.0]), torch.tensor([2.0, 0.0]))
    assert both.item() == pytest.approx(3.75 / 2)
    with pytest.raises(ValueError, match="2 sub-discriminators but anchors of size 1"):
        lecam_penalty([real, real], [fake, fake], torch.tensor([0.0]), torch.tensor([0.0]))


def test_lecam_anchors_are_bias_corrected_moving_averages():
    anchors = LeCamAnchors(decay=0.9)
    # first batch: biased average 0.1 * mean, corrected by 1 - 0.9 -> exactly the batch mean
    real_anchor, fake_anchor = anchors.update(torch.tensor([2.0, 4.0]), torch.tensor([-1.0]))
    assert (real_anchor.item(), fake_anchor.item()) == pytest.approx((3.0, -1.0))
    # second batch (mean 0): biased 0.9 * 0.3 + 0 = 0.27, corrected by 1 - 0.81 = 0.19 -> 1.4210526
    real_anchor, _ = anchors.update(torch.tensor([0.0]), torch.tensor([0.0]))
    assert real_anchor.item() == pytest.approx(0.27 / 0.19)
    restored = LeCamAnchors(decay=0.9)
    restored.load_state_dict(anchors.state_dict())
    assert restored.update(torch.tensor([1.0]), torch.tensor([1.0]))[0].item() == pytest.approx(
        anchors.update(torch.tensor([1.0]), torch.tensor([1.0]))[0].item())


def test_lecam_anchors_skip_non_finite_batches_and_uncommitted_updates():
    anchors = LeCamAnchors(decay=0.9)
    anchors.update(torch.tensor([2.0]), torch.tensor([-1.0]))
    kept = anchors.state_dict()
    peek = anchors.update(torch.tensor([0.0]), torch.tensor([0.0]), commit=False)  # validation: read only
    assert peek[0].item() == pytest.approx(0.18 / 0.19)
    assert torch.equal(anchors.averages, kept["averages"]) and anchors.steps == kept["steps"]
    anchors.update(torch.tensor([float("nan")]), torch.tensor([float("inf")]))  # a skipped NaN step
    assert torch.equal(anchors.averages, kept["averages"])  # not poisoned
    real_anchor, fake_anchor = anchors.update(torch.tensor([2.0]), torch.tensor([-1.0]))
    assert torch.isfinite(real_anchor).all() and torch.isfinite(fake_anchor).all()


def test_penalty_inputs_must_require_grad_and_be_used():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="real_inputs must require grad"):
        r1_penalty(LinearCritic([1.0, 1.0, 1.0])(x)[0], x)
    y = torch.randn(2, 3, requires_grad=True)
    unrelated = LinearCritic([1.0, 1.0, 1.0])(torch.randn(2, 3))[0]
    with pytest.raises(ValueError, match="do not depend on fake_inputs"):
        r2_penalty(unrelated, y)


def test_gradient_penalty_linear_critic_is_norm_minus_one_squared():
    # ||grad|| = ||w|| = ||[1, 2, 2]|| = 3 at every interpolate -> (3 - 1)^2 = 4
    critic = LinearCritic([1.0, 2.0, 2.0])
    real, fake = torch.randn(5, 3), torch.randn(5, 3)
    penalty = gradient_penalty(critic, real, fake)
    assert penalty.item() == pytest.approx(4.0)
    # backpropagates into D: d(||w|| - 1)^2 / dw = 2 (||w|| - 1) w / ||w|| = 2 * 2 * [1, 2, 2] / 3
    penalty.backward()
    assert torch.allclose(critic.linear.weight.grad, torch.tensor([[4 / 3, 8 / 3, 8 / 3]]))


def test_gradient_penalty_uses_per_sample_critic_mean_for_patch_logits():
    # 6 identical patch logits per sample: the critic is their mean, so ||grad|| is still ||w|| = 3
    critic = LinearCritic([1.0, 2.0, 2.0], patches=6)
    assert gradient_penalty(critic, torch.randn(2, 3), torch.randn(2, 3)).item() == pytest.approx(4.0)


class SquareCritic(nn.Module):
    def forward(self, x, scale=1.0, **cond):
        return [scale * x.square().sum(dim=1, keepdim=True)], [[]]


def test_gradient_penalty_interpolates_per_sample_deterministically_and_passes_cond():
    # real = 1, fake = 0 -> x_hat = alpha * 1 (4 features); D = s * sum x^2 -> grad = 2 s alpha * 1,
    # ||grad|| = 2 s alpha * sqrt(4) = 4 s alpha -> penalty = mean_i (4 s alpha_i - 1)^2
    real, fake = torch.ones(3, 4), torch.zeros(3, 4)
    value = gradient_penalty(SquareCritic(), real, fake, generator=torch.Generator().manual_seed(0), scale=0.5)
    alpha = torch.rand(3, 1, generator=torch.Generator().manual_seed(0))
    assert value.item() == pytest.approx(((4 * 0.5 * alpha - 1) ** 2).mean().item(), rel=1e-5)
    again = gradient_penalty(SquareCritic(), real, fake, generator=torch.Generator().manual_seed(0), scale=0.5)
    assert again.item() == value.item()
    with pytest.raises(ValueError, match="differ in shape"):
        gradient_penalty(SquareCritic(), torch.ones(3, 4), torch.ones(2, 4))


def test_lazy_regularization_gain():
    assert [lazy_regularization_gain(step, 4) for step in range(6)] == [4.0, 0.0, 0.0, 0.0, 4.0, 0.0]
    assert all(lazy_regularization_gain(step, 1) == 1.0 for step in range(3))
    with pytest.raises(ValueError, match="interval must be >= 1"):
        lazy_regularization_gain(0, 0)
