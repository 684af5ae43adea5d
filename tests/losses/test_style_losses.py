"""Known values of the style-transfer and vector-quantization losses, and the straight-through gradient."""

from __future__ import annotations

import math

import pytest
import torch

from advtune.losses import channel_statistics, content_loss, identity_loss, style_loss
from advtune.models.vector_quantizer import (
    VectorQuantizer,
    codebook_perplexity,
    dead_code_count,
    vector_quantization_losses,
)


def test_content_loss_is_the_mean_squared_difference():
    z_out = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    # (1 + 4 + 9 + 16) / 4 = 7.5
    assert content_loss(z_out, torch.zeros_like(z_out)).item() == pytest.approx(7.5)


def test_identity_loss_known_value():
    z_identity = torch.tensor([[[[1.0, 1.0]], [[0.0, -2.0]]]])  # (1, 2, 1, 2)
    # differences 1, 1, 0, -2 → (1 + 1 + 0 + 4) / 4 = 1.5
    assert identity_loss(z_identity, torch.zeros_like(z_identity)).item() == pytest.approx(1.5)


def test_channel_statistics_are_spatial_mean_and_population_std():
    z = torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]]]])  # (1, 2, 1, 2)
    mean, std = channel_statistics(z, eps=0.0)
    assert torch.allclose(mean, torch.tensor([[2.0, 2.0]]))
    assert torch.allclose(std, torch.tensor([[1.0, 0.0]]))  # var of [1, 3] is 1 (biased)
    _, std_eps = channel_statistics(z, eps=0.25)
    assert torch.allclose(std_eps, torch.tensor([[math.sqrt(1.25), 0.5]]))


def test_style_loss_known_value():
    # channel 0: [1, 3] (μ 2, σ 1) vs [0, 4] (μ 2, σ 2); channel 1: [0, 0] (μ 0, σ 0) vs [2, 2] (μ 2, σ 0)
    z_out = torch.tensor([[[[1.0, 3.0]], [[0.0, 0.0]]]])
    z_ref = torch.tensor([[[[0.0, 4.0]], [[2.0, 2.0]]]])
    # mean term: ((2-2)² + (0-2)²) / 2 = 2 ; std term: ((1-2)² + (0-0)²) / 2 = 0.5
    assert style_loss(z_out, z_ref, eps=0.0).item() == pytest.approx(2.5)


def test_style_loss_matches_each_sample_to_its_own_reference_of_any_size():
    z_out = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 5.0)])  # (2, 1, 2, 2)
    z_ref = torch.stack([torch.full((1, 3, 3), 1.0), torch.full((1, 3, 3), 3.0)])  # (2, 1, 3, 3)
    # sample 0 matches exactly; sample 1: mean 5 vs 3 → (0 + 4) / 2 = 2; both std 0
    assert style_loss(z_out, z_ref, eps=0.0).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="batch and channel"):
        style_loss(z_out, z_ref[:1])


def test_style_loss_gradient_moves_statistics_towards_the_reference():
    z_out = torch.tensor([[[[1.0, 3.0]]]], requires_grad=True)  # μ 2, σ 1
    z_ref = torch.tensor([[[[4.0, 8.0]]]])                       # μ 6, σ 2
    style_loss(z_out, z_ref, eps=0.0).backward()
    # loss = (μ − 6)² + (σ − 2)². μ part: 2(2 − 6)·½ = −4 for each z. σ part: dσ/dz_i = (z_i − μ)/(Nσ)
    # = (−½, ½), times 2(1 − 2) gives (1, −1). Total (−3, −5).
    assert torch.allclose(z_out.grad, torch.tensor([[[[-3.0, -5.0]]]]))


def test_vector_quantization_losses_known_values_and_gradient_routes():
    z_e = torch.tensor([1.0, 2.0], requires_grad=True)
    z_q = torch.tensor([0.0, 0.0], requires_grad=True)
    losses = vector_quantization_losses(z_e, z_q, beta=0.25)
    # codebook = commitment = (1 + 4) / 2 = 2.5 ; loss = 2.5 + 0.25 · 2.5
    assert losses["codebook"].item() == pytest.approx(2.5)
    assert losses["commitment"].item() == pytest.approx(2.5)
    assert losses["loss"].item() == pytest.approx(3.125)
    losses["loss"].backward()
    # codebook term only moves the code: 2(z_q − z_e)/2 ; commitment only the encoder: β·2(z_e − z_q)/2
    assert torch.allclose(z_q.grad, torch.tensor([-1.0, -2.0]))
    assert torch.allclose(z_e.grad, torch.tensor([0.25, 0.5]))


def _quantizer_with_codes(codes: list[list[float]]) -> VectorQuantizer:
    quantizer = VectorQuantizer(num_codes=len(codes), code_dim=len(codes[0]), beta=0.25)
    with torch.no_grad():
        quantizer.codebook.weight.copy_(torch.tensor(codes))
    return quantizer


def test_quantizer_picks_the_nearest_code_and_passes_gradient_straight_through():
    quantizer = _quantizer_with_codes([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
    # three positions (1×3 map) of 2-d vectors: nearest codes 1, 2, 0
    z_e = torch.tensor([[[[0.9, -0.8, 0.1]], [[1.2, 1.9, -0.2]]]], requires_grad=True)  # (1, 2, 1, 3)
    out = quantizer(z_e)
    assert out.indices.tolist() == [[[1, 2, 0]]]
    expected = torch.tensor([[[[1.0, -1.0, 0.0]], [[1.0, 2.0, 0.0]]]])
    assert torch.allclose(out.quantized, expected)
    weights = torch.arange(6.0).view(1, 2, 1, 3)
    (out.quantized * weights).sum().backward()
    assert torch.equal(z_e.grad, weights)  # identity gradient: straight-through
    assert quantizer.codebook.weight.grad is None  # the ST output carries no codebook gradient


def test_quantizer_loss_reaches_codebook_and_encoder():
    quantizer = _quantizer_with_codes([[0.0, 0.0], [1.0, 1.0]])
    z_e = torch.tensor([[[[0.8]], [[0.6]]]], requires_grad=True)  # nearest: code 1
    out = quantizer(z_e)
    # codebook = commitment = ((0.2)² + (0.4)²) / 2 = 0.1
    assert out.codebook_loss.item() == pytest.approx(0.1)
    assert out.loss.item() == pytest.approx(0.1 + 0.25 * 0.1)
    out.loss.backward()
    assert torch.allclose(quantizer.codebook.weight.grad[1], torch.tensor([0.2, 0.4]))
    assert torch.allclose(quantizer.codebook.weight.grad[0], torch.zeros(2))
    assert torch.allclose(z_e.grad.flatten(), torch.tensor([-0.05, -0.1]))


def test_perplexity_and_dead_codes_known_values():
    indices = torch.tensor([[0, 0], [1, 1]])
    assert codebook_perplexity(indices, num_codes=4).item() == pytest.approx(2.0)
    assert dead_code_count(indices, num_codes=4).item() == 2.0
    all_codes = torch.arange(8)
    assert codebook_perplexity(all_codes, num_codes=8).item() == pytest.approx(8.0)
    assert dead_code_count(all_codes, num_codes=8).item() == 0.0
