"""Audio metrics: SI-SDR known values, STFT/mel distances, spectrogram PNG."""

import math

import pytest
import torch

from advtune.metrics.audio import audio_metrics, save_spectrogram_comparison, si_sdr, stft_distance


def test_si_sdr_known_value_with_orthogonal_noise():
    t = torch.arange(800) / 800
    target = torch.sin(2 * math.pi * 10 * t)
    noise = 0.1 * torch.cos(2 * math.pi * 10 * t)  # orthogonal, energy 1% of the target
    assert si_sdr(target + noise, target).item() == pytest.approx(20.0, abs=1e-3)


def test_si_sdr_is_scale_invariant():
    torch.manual_seed(0)
    target = torch.randn(2, 1, 400)
    estimate = target + 0.3 * torch.randn(2, 1, 400)
    assert si_sdr(3.0 * estimate, target).item() == pytest.approx(si_sdr(estimate, target).item(), abs=1e-4)
    assert si_sdr(estimate, target) > si_sdr(target + torch.randn(2, 1, 400), target)


def test_audio_metrics_keys_and_order():
    torch.manual_seed(0)
    target = torch.randn(2, 1, 1000)
    close, far = target + 0.01 * torch.randn_like(target), torch.randn_like(target)
    good, bad = audio_metrics(close, target, 8000), audio_metrics(far, target, 8000)
    assert set(good) == {"val/stft_distance", "val/mel_distance", "val/si_sdr"}
    assert good["val/stft_distance"] < bad["val/stft_distance"]
    assert good["val/mel_distance"] < bad["val/mel_distance"]
    assert good["val/si_sdr"] > bad["val/si_sdr"]
    assert stft_distance(target, target).item() == pytest.approx(0.0, abs=1e-6)


def test_spectrogram_png_written(tmp_path):
    audio = torch.randn(3, 1, 1000)
    path = save_spectrogram_comparison(tmp_path / "spec.png", audio, 0.5 * audio, 8000, max_rows=2)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
