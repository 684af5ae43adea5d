"""Audio reconstruction metrics and a spectrogram comparison figure.

* Multi-resolution STFT distance: the Parallel WaveGAN loss value (lower is better).
* Mel distance: L1 between log-mel spectrograms (lower is better).
* SI-SDR (Le Roux et al. 2019, "SDR – half-baked or well done?", eq. 3): with zero-mean ``s``
  (reference) and ``ŝ``, ``α = <ŝ, s> / ||s||²`` and
  ``SI-SDR = 10 log10(||α s||² / ||α s - ŝ||²)`` dB, per channel, averaged (higher is better).
* PESQ (ITU-T P.862.2 wide-band at 16 kHz, P.862 narrow-band at 8 kHz; the ``pesq`` package),
  MOS-LQO from about 1.0 to 4.64 (higher is better); an objective speech-quality score.
* STOI (Taal et al. 2011, the ``pystoi`` package): short-time objective intelligibility, 0 to 1
  (higher is better).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from advtune.losses.reconstruction import mel_distance, multi_resolution_stft_loss, stft_magnitude

__all__ = ["si_sdr", "stft_distance", "mel_distance", "pesq_score", "stoi_score", "audio_metrics",
           "save_spectrogram_comparison"]

_PESQ_MODES = {16000: "wb", 8000: "nb"}


@torch.no_grad()
def si_sdr(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale-invariant SDR in dB of ``pred`` against ``target`` ``(..., T)``, mean over signals."""
    if pred.shape != target.shape:
        raise ValueError(f"si_sdr: pred shape {tuple(pred.shape)} != target shape "
                         f"{tuple(target.shape)}")
    pred = pred.double() - pred.double().mean(dim=-1, keepdim=True)
    target = target.double() - target.double().mean(dim=-1, keepdim=True)
    alpha = (pred * target).sum(-1, keepdim=True) / (target.pow(2).sum(-1, keepdim=True) + eps)
    projection = alpha * target
    noise = projection - pred
    ratio = (projection.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps)
    return (10.0 * torch.log10(ratio)).mean().float()


@torch.no_grad()
def stft_distance(pred: Tensor, target: Tensor, fft_sizes: Sequence[int] = (512, 256, 128)
                  ) -> Tensor:
    """Multi-resolution STFT loss with hop ``n_fft/4`` and window ``n_fft`` (no gradient)."""
    return multi_resolution_stft_loss(pred, target, fft_sizes, [n // 4 for n in fft_sizes],
                                      list(fft_sizes))


def _signals(pred: Tensor, target: Tensor, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(..., T)`` tensors as float64 ``(N, T)`` arrays, one row per signal."""
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred shape {tuple(pred.shape)} != target shape "
                         f"{tuple(target.shape)}")
    flat = [x.detach().reshape(-1, x.shape[-1]).double().cpu().numpy() for x in (pred, target)]
    return flat[0], flat[1]


def pesq_score(pred: Tensor, target: Tensor, sample_rate: int) -> Tensor:
    """Mean PESQ MOS-LQO over the signals of ``(..., T)`` (wide-band at 16 kHz, narrow at 8 kHz).

    A signal PESQ cannot score (no speech found in the reference) is left out of the mean;
    the result is NaN when no signal could be scored.
    """
    from pesq import PesqError, pesq

    if sample_rate not in _PESQ_MODES:
        raise ValueError(f"pesq_score: PESQ needs 16000 (wide-band) or 8000 Hz (narrow-band) "
                         f"audio, got {sample_rate} Hz")
    scores = [pesq(sample_rate, ref, deg, _PESQ_MODES[sample_rate], on_error=PesqError.RETURN_VALUES)
              if np.abs(ref).max() > 0 else -1.0  # pesq divides by the peak: skip silence
              for deg, ref in zip(*_signals(pred, target, "pesq_score"))]
    valid = [s for s in scores if s >= 0]  # errors come back as negative codes
    return torch.tensor(float(np.mean(valid)) if valid else float("nan"))


def stoi_score(pred: Tensor, target: Tensor, sample_rate: int) -> Tensor:
    """Mean STOI over the signals of ``(..., T)`` (``pystoi``; resampled to 10 kHz inside)."""
    from pystoi import stoi

    scores = [stoi(ref, deg, sample_rate) for deg, ref in zip(*_signals(pred, target, "stoi_score"))]
    return torch.tensor(float(np.mean(scores)))


@torch.no_grad()
def audio_metrics(pred: Tensor, target: Tensor, sample_rate: int, prefix: str = "val/",
                  perceptual: bool = False) -> dict[str, Tensor]:
    """``stft_distance``, ``mel_distance``, ``si_sdr`` (and ``pesq``, ``stoi`` when
    ``perceptual``), each ``prefix + name``, for one batch ``(B, C, T)``."""
    metrics = {
        f"{prefix}stft_distance": stft_distance(pred, target),
        f"{prefix}mel_distance": mel_distance(pred, target, sample_rate).detach(),
        f"{prefix}si_sdr": si_sdr(pred, target),
    }
    if perceptual:
        metrics[f"{prefix}pesq"] = pesq_score(pred, target, sample_rate)
        metrics[f"{prefix}stoi"] = stoi_score(pred, target, sample_rate)
    return metrics


def save_spectrogram_comparison(path: str | Path, real: Tensor, fake: Tensor, sample_rate: int,
                                n_fft: int = 256, max_rows: int = 4) -> Path:
    """PNG with one row per clip: log-magnitude of the real clip (left) and its reconstruction.

    Args:
        path: PNG file to write.
        real: ``(B, C, T)`` (channel 0 is shown).
        fake: same shape.
        sample_rate: for the frequency axis.
        n_fft: FFT size (hop ``n_fft/4``).
        max_rows: clips shown.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless: never open a window
    import matplotlib.pyplot as plt

    rows = min(max_rows, real.shape[0])
    figure, axes = plt.subplots(rows, 2, figsize=(8, 2.2 * rows), squeeze=False)
    duration = real.shape[-1] / sample_rate
    for row in range(rows):
        for col, (name, audio) in enumerate((("real", real), ("reconstruction", fake))):
            magnitude = stft_magnitude(audio[row, 0].detach().cpu(), n_fft, n_fft // 4, n_fft)[0]
            image = 20.0 * np.log10(magnitude.T.numpy() + 1e-5)
            axes[row][col].imshow(image, origin="lower", aspect="auto", cmap="magma", vmin=-80,
                                  extent=(0.0, duration, 0.0, sample_rate / 2000.0))
            axes[row][col].set_title(f"{name} #{row}", fontsize=8)
            axes[row][col].set_ylabel("kHz", fontsize=7)
    axes[-1][0].set_xlabel("seconds", fontsize=7)
    axes[-1][1].set_xlabel("seconds", fontsize=7)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
