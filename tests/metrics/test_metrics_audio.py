"""Audio metrics: SI-SDR known values, STFT/mel distances, PESQ and STOI on shipped speech,
spectrogram PNG."""

import math

import pytest
import torch

from advtune.data.speech import SPEECH_DIR, load_clips
from advtune.metrics.audio import (
    audio_metrics,
    pesq_score,
    save_spectrogram_comparison,
    si_sdr,
    stft_distance,
    stoi_score,
)


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


def test_pesq_and_stoi_known_values_on_shipped_speech():
    clip = torch.from_numpy(load_clips(SPEECH_DIR / "heldout", 16000)[0][: 2 * 16000])[None, None]
    # Identical signals: PESQ wide-band's ceiling (MOS-LQO 4.64) and STOI 1.
    assert pesq_score(clip, clip, 16000).item() == pytest.approx(4.644, abs=0.01)
    assert stoi_score(clip, clip, 16000).item() == pytest.approx(1.0, abs=1e-6)
    generator = torch.Generator().manual_seed(0)
    light, heavy = (clip + level * torch.randn(clip.shape, generator=generator) for level in (0.003, 0.1))
    assert 1.0 < pesq_score(heavy, clip, 16000) < pesq_score(light, clip, 16000) < 4.644
    assert 0.0 < stoi_score(heavy, clip, 16000) < stoi_score(light, clip, 16000) < 1.0
    metrics = audio_metrics(light, clip, 16000, prefix="x/", perceptual=True)
    assert set(metrics) == {"x/stft_distance", "x/mel_distance", "x/si_sdr", "x/pesq", "x/stoi"}
    with pytest.raises(ValueError, match="16000 .wide-band. or 8000 Hz"):
        pesq_score(clip, clip, 24000)
    # Silence has no speech for PESQ to find: left out, NaN when nothing could be scored.
    assert math.isnan(pesq_score(clip * 0, clip * 0, 16000).item())
