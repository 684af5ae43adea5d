"""Reconstruction losses for waveform autoencoders: L1, multi-resolution STFT, KL, mel distance.

* Multi-resolution STFT loss of Parallel WaveGAN (Yamamoto et al. 2020, eqs. 1-4): per resolution
  ``m``, spectral convergence ``||  |S| - |Ŝ|  ||_F / || |S| ||_F`` plus log-magnitude distance
  ``1/N || log|S| - log|Ŝ| ||_1``; the loss is their sum averaged over resolutions.
* KL divergence of a diagonal Gaussian posterior from ``N(0, I)`` (Kingma & Welling 2014,
  appendix B): ``-1/2 (1 + log σ² - μ² - σ²)``.
* Mel distance: L1 between log-mel spectrograms (a perceptual proxy used by DAC and MelGAN).

All functions take audio ``(B, C, T)`` (or any ``(..., T)``) and return a scalar.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from advtune.losses._checks import check_same_shape

__all__ = [
    "l1_waveform_loss",
    "stft_magnitude",
    "spectral_convergence_loss",
    "log_stft_magnitude_loss",
    "multi_resolution_stft_loss",
    "kl_divergence",
    "mel_filterbank",
    "mel_distance",
]



def l1_waveform_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``mean |pred - target|`` over every sample."""
    check_same_shape(pred, target, "l1_waveform_loss")
    return (pred - target).abs().mean()


def stft_magnitude(audio: Tensor, n_fft: int, hop_length: int, win_length: int,
                   eps: float = 1e-7) -> Tensor:
    """``|STFT|`` of ``(..., T)`` with a centred Hann window -> ``(N, frames, n_fft//2 + 1)``.

    ``eps`` floors the squared magnitude so that its square root and log have finite gradients.
    """
    if win_length > n_fft:
        raise ValueError(f"stft_magnitude: win_length {win_length} > n_fft {n_fft}")
    flat = audio.reshape(-1, audio.shape[-1]).float()
    if flat.shape[-1] <= n_fft // 2:  # reflect padding of the centred STFT needs T > n_fft/2
        flat = torch.nn.functional.pad(flat, (0, n_fft // 2 + 1 - flat.shape[-1]))
    window = torch.hann_window(win_length, device=audio.device)
    spec = torch.stft(flat, n_fft, hop_length, win_length, window=window, return_complex=True)
    return (spec.real.pow(2) + spec.imag.pow(2)).clamp_min(eps).sqrt().transpose(1, 2)


def spectral_convergence_loss(pred_mag: Tensor, target_mag: Tensor) -> Tensor:
    """``|| |S| - |Ŝ| ||_F / || |S| ||_F`` over the whole batch (Yamamoto et al. 2020, eq. 2)."""
    check_same_shape(pred_mag, target_mag, "spectral_convergence_loss")
    return torch.linalg.vector_norm(target_mag - pred_mag) / torch.linalg.vector_norm(target_mag)


def log_stft_magnitude_loss(pred_mag: Tensor, target_mag: Tensor) -> Tensor:
    """``mean |log|S| - log|Ŝ||`` (Yamamoto et al. 2020, eq. 3)."""
    check_same_shape(pred_mag, target_mag, "log_stft_magnitude_loss")
    return (target_mag.log() - pred_mag.log()).abs().mean()


def multi_resolution_stft_loss(
    pred: Tensor,
    target: Tensor,
    fft_sizes: Sequence[int] = (1024, 2048, 512),
    hop_sizes: Sequence[int] = (120, 240, 50),
    win_lengths: Sequence[int] = (600, 1200, 240),
) -> Tensor:
    """Spectral convergence + log magnitude, averaged over resolutions (Parallel WaveGAN defaults).

    Args:
        pred: reconstruction ``(..., T)``.
        target: reference ``(..., T)``.
        fft_sizes: FFT size per resolution.
        hop_sizes: hop per resolution.
        win_lengths: Hann window per resolution.
    """
    check_same_shape(pred, target, "multi_resolution_stft_loss")
    if not fft_sizes or not len(fft_sizes) == len(hop_sizes) == len(win_lengths):
        raise ValueError(f"multi_resolution_stft_loss: fft_sizes {list(fft_sizes)}, hop_sizes "
                         f"{list(hop_sizes)}, win_lengths {list(win_lengths)} must be non-empty "
                         "and of equal length")
    total = pred.new_zeros((), dtype=torch.float32)
    for n_fft, hop, win in zip(fft_sizes, hop_sizes, win_lengths):
        pred_mag = stft_magnitude(pred, int(n_fft), int(hop), int(win))
        target_mag = stft_magnitude(target, int(n_fft), int(hop), int(win))
        total = total + spectral_convergence_loss(pred_mag, target_mag)
        total = total + log_stft_magnitude_loss(pred_mag, target_mag)
    return total / len(fft_sizes)


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(μ, σ²) || N(0, 1))`` averaged over every latent element (batch, channel, time).

    Averaging (not summing) keeps the weight independent of the latent size and clip length.
    """
    check_same_shape(mean, logvar, "kl_divergence")
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()


def _hz_to_mel(hz: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)  # HTK mel scale


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None, device: torch.device | str | None = None) -> Tensor:
    """Triangular filters ``(n_mels, n_fft//2 + 1)``, peak 1, centres evenly spaced in HTK mel.

    Built on ``device`` (a training step's mel loss copies nothing from the host: no sync)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"mel_filterbank: need 0 <= f_min < f_max <= sample_rate/2, got "
                         f"f_min={f_min}, f_max={f_max}, sample_rate={sample_rate}")
    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64, device=device)
    mel_points = torch.linspace(float(_hz_to_mel(torch.tensor(float(f_min)))),
                                float(_hz_to_mel(torch.tensor(float(f_max)))), n_mels + 2,
                                dtype=torch.float64, device=device)
    hz_points = 700.0 * (10.0 ** (mel_points / 2595.0) - 1.0)
    lower, centre, upper = hz_points[:-2, None], hz_points[1:-1, None], hz_points[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return torch.minimum(rising, falling).clamp_min(0.0).float()


def mel_distance(pred: Tensor, target: Tensor, sample_rate: int, n_ffts: Sequence[int] = (512,),
                 n_mels: int = 64, eps: float = 1e-5) -> Tensor:
    """Mean L1 between ``log10`` mel spectrograms, averaged over FFT sizes (hop ``n_fft/4``).

    ``n_mels`` is capped at the number of FFT bins so short FFTs stay valid.
    """
    check_same_shape(pred, target, "mel_distance")
    total = pred.new_zeros((), dtype=torch.float32)
    for n_fft in n_ffts:
        n_fft = int(n_fft)
        bank = mel_filterbank(sample_rate, n_fft, min(n_mels, n_fft // 4), device=pred.device)
        mels = [torch.log10((stft_magnitude(x, n_fft, n_fft // 4, n_fft) @ bank.T).clamp_min(eps))
                for x in (pred, target)]
        total = total + (mels[0] - mels[1]).abs().mean()
    return total / len(n_ffts)
