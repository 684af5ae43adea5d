"""Reconstruction losses against hand-computed values."""

import math

import pytest
import torch

from advtune.losses import (
    kl_divergence,
    l1_waveform_loss,
    log_stft_magnitude_loss,
    mel_distance,
    mel_filterbank,
    multi_resolution_stft_loss,
    spectral_convergence_loss,
    stft_magnitude,
)


def test_l1_known_value():
    pred = torch.tensor([[[0.0, 1.0, 2.0]]])
    target = torch.tensor([[[1.0, 1.0, 0.0]]])
    assert l1_waveform_loss(pred, target).item() == pytest.approx((1 + 0 + 2) / 3)


def test_spectral_convergence_known_values():
    target = torch.tensor([[[3.0, 4.0]]])
    assert spectral_convergence_loss(torch.tensor([[[0.0, 0.0]]]), target).item() == pytest.approx(1.0)
    # ||(3,4) - (3,0)|| / ||(3,4)|| = 4 / 5
    assert spectral_convergence_loss(torch.tensor([[[3.0, 0.0]]]), target).item() == pytest.approx(0.8)


def test_log_magnitude_known_value():
    target = torch.tensor([[[math.e, 1.0]]])
    pred = torch.tensor([[[1.0, 1.0]]])
    # mean(|1 - 0|, |0 - 0|) = 0.5
    assert log_stft_magnitude_loss(pred, target).item() == pytest.approx(0.5)


def test_multi_resolution_stft_of_half_amplitude_is_half_plus_log2():
    torch.manual_seed(0)
    target = torch.randn(2, 1, 1024)
    # |S(x/2)| = |S(x)|/2 at every bin: SC = 0.5 and log distance = ln 2, at each resolution.
    loss = multi_resolution_stft_loss(0.5 * target, target, [256, 128], [64, 32], [256, 100])
    assert loss.item() == pytest.approx(0.5 + math.log(2), abs=1e-3)
    assert multi_resolution_stft_loss(target, target, [128], [32], [128]).item() == pytest.approx(0.0, abs=1e-6)


def test_multi_resolution_stft_validates_resolutions_and_shapes():
    x = torch.randn(1, 1, 512)
    with pytest.raises(ValueError, match="equal length"):
        multi_resolution_stft_loss(x, x, [128, 64], [32], [128, 64])
    with pytest.raises(ValueError, match="shape"):
        multi_resolution_stft_loss(x, x[..., :256])


def test_stft_magnitude_matches_pure_tone_peak():
    t = torch.arange(1024) / 1024
    tone = torch.sin(2 * math.pi * 64 * t)  # bin 16 of a 256-point FFT
    magnitude = stft_magnitude(tone[None, None], 256, 64, 256)
    assert magnitude.shape == (1, 1024 // 64 + 1, 129)
    assert magnitude[0, 8].argmax().item() == 16


def test_kl_known_values():
    zero = torch.zeros(2, 3, 4)
    assert kl_divergence(zero, zero).item() == pytest.approx(0.0)
    # 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2) with mu=1, sigma=1 -> 0.5
    assert kl_divergence(torch.ones(2, 3, 4), zero).item() == pytest.approx(0.5)
    # mu=0, sigma^2=2 -> 0.5 * (2 - 1 - ln 2)
    logvar = torch.full((2, 3, 4), math.log(2.0))
    assert kl_divergence(zero, logvar).item() == pytest.approx(0.5 * (1 - math.log(2)))


def test_mel_filterbank_shape_and_peaks():
    bank = mel_filterbank(8000, 256, 20)
    assert bank.shape == (20, 129)
    assert (bank >= 0).all() and bank.max() <= 1.0 + 1e-6
    assert (bank.sum(dim=1) > 0).all()  # no empty filter
    centres = bank.argmax(dim=1)
    assert (centres[1:] >= centres[:-1]).all()  # ordered by frequency
    with pytest.raises(ValueError, match="f_max"):
        mel_filterbank(8000, 256, 20, f_max=5000)


def test_mel_distance_known_values():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 2048)
    assert mel_distance(x, x, 8000).item() == pytest.approx(0.0)
    # log10(10 * mel) - log10(mel) = 1 for every mel bin
    assert mel_distance(10 * x, x, 8000, n_ffts=(256, 512)).item() == pytest.approx(1.0, abs=1e-3)


def test_losses_have_gradients():
    target = torch.randn(1, 1, 512)
    pred = torch.zeros(1, 1, 512, requires_grad=True)
    (multi_resolution_stft_loss(pred + 0.1 * target, target, [128], [32], [128])
     + l1_waveform_loss(pred, target)).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
