"""LatentDiscriminator: contract, shapes, conditioning, re-noising helpers (known values), init."""

from __future__ import annotations

import math

import pytest
import torch

from advtune.discriminators.latent import (
    LatentDiscriminator,
    batch_sigma,
    renoise,
    sample_renoise_sigma,
    sigma_embedding,
)


@pytest.mark.parametrize("size,num_layers,logit_size", [(8, 2, 2), (16, 2, 4), (16, 3, 2)])
def test_output_contract_and_shapes(size, num_layers, logit_size):
    disc = LatentDiscriminator(in_channels=1, base_channels=8, num_layers=num_layers, embedding_dim=16)
    logits, features = disc(torch.randn(3, 1, size, size), sigma=torch.rand(3), unused_key=1)
    assert isinstance(logits, list) and len(logits) == 1 and len(features) == 1
    assert logits[0].shape == (3, 1, logit_size, logit_size)
    assert len(features[0]) == num_layers and features[0][-1].shape[-1] == logit_size


def test_renoise_and_embedding_known_values():
    x, noise = torch.ones(2, 1, 2, 2), torch.full((2, 1, 2, 2), -1.0)
    out = renoise(x, torch.tensor([0.25, 1.0]), noise)
    assert torch.allclose(out[0], torch.full((1, 2, 2), 0.5))  # 0.75·1 + 0.25·(−1)
    assert torch.allclose(out[1], torch.full((1, 2, 2), -1.0))
    emb = sigma_embedding(torch.tensor([0.0, 0.001]), 4)
    # frequencies exp(−ln(1e4)·[0, 1]/2) = [1, 0.01]; angles 1000·σ·f
    assert torch.allclose(emb[0], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert torch.allclose(emb[1], torch.tensor([math.cos(1), math.cos(0.01), math.sin(1), math.sin(0.01)]))
    assert batch_sigma(0.5, x).tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="3 values for a batch of 2"):
        batch_sigma(torch.rand(3), x)


def test_renoise_level_is_logit_normal_shifted_to_high_noise():
    sigma = sample_renoise_sigma(4000, 1.0, 1.0, generator=torch.Generator().manual_seed(0))
    assert abs(sigma.median().item() - 1 / (1 + math.exp(-1))) < 0.02  # median sigmoid(1) ≈ 0.731
    assert 0.0 < sigma.min() and sigma.max() < 1.0


def test_documented_init_and_conditioning():
    torch.manual_seed(0)
    disc = LatentDiscriminator(base_channels=8, embedding_dim=16, renoise=False)
    assert all(torch.count_nonzero(f.proj.weight) == 0 for f in disc.films)  # FiLM starts neutral
    assert abs(disc.out.weight.std().item() - 0.02) < 0.01
    x = torch.randn(2, 1, 8, 8)
    low, high = disc(x, sigma=torch.zeros(2))[0][0], disc(x, sigma=torch.ones(2))[0][0]
    assert torch.equal(low, high)  # without re-noising, σ only acts through FiLM (zero at init)
    with torch.no_grad():
        disc.films[0].proj.weight.normal_()
    assert not torch.allclose(disc(x, sigma=torch.zeros(2))[0][0], disc(x, sigma=torch.ones(2))[0][0])


def test_renoising_is_differentiable_in_the_input_and_spectral_norm_variant():
    disc = LatentDiscriminator(base_channels=8, embedding_dim=16, spectral_norm=True)
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    disc(x)[0][0].sum().backward()  # σ drawn internally when not given
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert any("parametrizations" in name for name, _ in disc.named_parameters())


def test_bad_inputs_fail_with_one_line():
    disc = LatentDiscriminator(num_layers=3)
    with pytest.raises(ValueError, match=r"H, W >= 8, got \(1, 1, 4, 4\)"):
        disc(torch.randn(1, 1, 4, 4))
    with pytest.raises(ValueError, match="even embedding_dim"):
        LatentDiscriminator(embedding_dim=7)


def test_r1_is_taken_at_the_renoised_input_the_network_scores():
    """Issue 9, fix 1: R1 of the re-noising D equals R1 of the same network fed x_σ directly (no (1 − σ)² factor)."""
    from advtune import AdversarialLossCalculator
    from advtune.losses import r1_penalty

    torch.manual_seed(0)
    disc = LatentDiscriminator(in_channels=1, base_channels=8, num_layers=2, embedding_dim=16)
    plain = LatentDiscriminator(in_channels=1, base_channels=8, num_layers=2, embedding_dim=16, renoise=False)
    plain.load_state_dict(disc.state_dict())
    real, fake, sigma = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8), torch.full((4,), 0.9)
    torch.manual_seed(1)
    out = AdversarialLossCalculator(r1_weight=2.0).compute_discriminator_loss(disc, real, fake, 0, sigma=sigma)
    torch.manual_seed(1)
    noisy, _ = disc.prepare_input(real, sigma=sigma)  # the same noise draw
    noisy.requires_grad_(True)
    expected = r1_penalty(plain(noisy, sigma=sigma)[0], noisy)
    assert out["d/r1"].item() == pytest.approx(expected.item(), rel=1e-5)
    # at the clean latent it would be (1 - σ)² = 0.01 times smaller
    clean = real.clone().requires_grad_(True)
    torch.manual_seed(1)
    at_clean = r1_penalty(disc(clean, sigma=sigma)[0], clean)
    assert at_clean.item() == pytest.approx(0.01 * expected.item(), rel=1e-4)
