"""Audio discriminators: output contract at random lengths, reference parameter counts,
MSD scales pooled as HiFi-GAN does (taps), STFT hops/windows and filters_scale, spectral norm,
EnCodec composition."""

import random

import pytest
import torch

from advtune.discriminators import (
    EnCodecDiscriminator,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    MultiScaleSTFTDiscriminator,
)
from advtune.discriminators.audio_msd import downsample_audio


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_discriminators(channels: int) -> dict[str, tuple[torch.nn.Module, int]]:
    """name -> (discriminator, expected number of sub-discriminators)."""
    return {
        "stft": (MultiScaleSTFTDiscriminator(4, channels, [256, 128, 64]), 3),
        "msd": (MultiScaleDiscriminator([1, 2, 4], channels, channel_divisor=16), 3),
        "mpd": (MultiPeriodDiscriminator([2, 3, 5, 7], [4, 8, 8], channels), 4),
        "encodec": (EnCodecDiscriminator(4, channels, [128, 64], msd_scales=[1, 2],
                                         msd_channel_divisor=16, mpd_periods=[2, 3],
                                         mpd_channels=[4, 8]), 2 + 2 + 2),
    }


@pytest.mark.parametrize("channels", [1, 2])
def test_contract_at_random_lengths(channels):
    rng = random.Random(channels)
    torch.manual_seed(0)
    for name, (disc, expected) in tiny_discriminators(channels).items():
        for length in (rng.randint(100, 1500), rng.randint(100, 1500)):
            audio = torch.randn(3, channels, length, requires_grad=True)
            logits, features = disc(audio, sigma=torch.ones(3), unused="ignored")
            assert isinstance(logits, list) and isinstance(features, list), name
            assert len(logits) == len(features) == expected, (name, length)
            for logit, maps in zip(logits, features):
                assert logit.shape[0] == 3 and torch.isfinite(logit).all(), (name, length)
                assert maps and all(m.shape[0] == 3 for m in maps), (name, length)
            sum(logit.sum() for logit in logits).backward()
            assert audio.grad is not None and audio.grad.abs().sum() > 0, name


def test_stft_parameter_count_matches_audiocraft():
    disc = MultiScaleSTFTDiscriminator(filters=32, in_channels=1,
                                       n_ffts=[1024, 2048, 512, 256, 128])
    assert count(disc) == 472_330


def test_msd_and_mpd_parameter_counts_match_hifigan():
    assert count(MultiScaleDiscriminator(scales=[1, 2, 4])) == 29_618_821
    assert count(MultiPeriodDiscriminator(periods=[2, 3, 5, 7, 11],
                                          channels=[32, 128, 512, 1024, 1024])) == 41_105_770


def test_stft_hops_windows_default_to_encodec_and_window_is_l2_normalised():
    disc = MultiScaleSTFTDiscriminator(4, 1, [1024, 2048, 512, 256, 128])
    assert [d.hop_length for d in disc.discriminators] == [256, 512, 128, 64, 32]
    assert [d.win_length for d in disc.discriminators] == [1024, 2048, 512, 256, 128]
    sub = disc.discriminators[4]
    torch.testing.assert_close(sub.window.pow(2).sum(), torch.tensor(1.0))
    spec = sub.spectrogram(torch.randn(2, 1, 1000))
    # (B, 2C, frames, freq): no centring, frames = (T - n_fft) // hop + 1
    assert spec.shape == (2, 2, (1000 - 128) // 32 + 1, 65)


def test_stft_spectrogram_real_and_imaginary_channels():
    sub = MultiScaleSTFTDiscriminator(4, 2, [64]).discriminators[0]
    audio = torch.randn(1, 2, 300)
    spec = sub.spectrogram(audio)
    reference = torch.stft(audio[0, 1], 64, 16, 64, window=sub.window, center=False,
                           return_complex=True)
    torch.testing.assert_close(spec[0, 1], reference.real.T)   # real part, channel 1
    torch.testing.assert_close(spec[0, 3], reference.imag.T)   # imaginary part, channel 1


def test_msd_each_scale_really_sees_downsampled_audio():
    torch.manual_seed(0)
    disc = MultiScaleDiscriminator([1, 2, 4], channel_divisor=16).eval()
    seen = []
    hooks = [sub.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
             for sub in disc.discriminators]
    audio = torch.randn(2, 1, 800)
    logits, _ = disc(audio)
    for hook in hooks:
        hook.remove()
    assert [s.shape[-1] for s in seen] == [800, 401, 201]
    torch.testing.assert_close(seen[0], audio)
    # scale 2 is the average of neighbouring samples (window 4, stride 2)
    torch.testing.assert_close(seen[1][0, 0, 100], audio[0, 0, 198:202].mean())
    for scale, sub, logit in zip([1, 2, 4], disc.discriminators, logits):
        torch.testing.assert_close(logit, sub(downsample_audio(audio, scale))[0])
    # The pooled input changes the result: running scale 4 on raw audio gives other logits.
    assert logits[2].shape != disc.discriminators[2](audio)[0].shape


def test_mpd_folds_by_period():
    disc = MultiPeriodDiscriminator([3, 5], [4, 8])
    logits, features = disc(torch.randn(2, 1, 301))
    assert [f[0].shape[-1] for f in features] == [3, 5]
    assert [logit.shape[-1] for logit in logits] == [3, 5]


def test_encodec_switches_parts_on_and_off():
    kwargs = dict(stft_filters=4, in_channels=1, n_ffts=[128, 64], msd_channel_divisor=16,
                  mpd_periods=[2, 3, 5], mpd_channels=[4, 8])
    full = EnCodecDiscriminator(**kwargs)
    no_msd = EnCodecDiscriminator(use_msd=False, **kwargs)
    stft_only = EnCodecDiscriminator(use_msd=False, use_mpd=False, **kwargs)
    assert (full.num_discriminators, no_msd.num_discriminators, stft_only.num_discriminators) == (8, 5, 2)
    assert no_msd.msd is None and stft_only.mpd is None
    assert count(full) == count(full.stft) + count(full.msd) + count(full.mpd)
    logits, _ = no_msd(torch.randn(1, 1, 500))
    assert len(logits) == 5


def test_invalid_settings_raise_value_error():
    with pytest.raises(ValueError, match="equal length"):
        MultiScaleSTFTDiscriminator(4, 1, [128, 64], hop_lengths=[32])
    with pytest.raises(ValueError, match="scales"):
        MultiScaleDiscriminator([0, 2])
    with pytest.raises(ValueError, match="channel_divisor"):
        MultiScaleDiscriminator([1], channel_divisor=3)


def test_msd_pooling_is_hifigans_successive_avgpool_with_zero_padding():
    audio = torch.randn(2, 1, 301)
    hifigan_pool = torch.nn.AvgPool1d(4, 2, padding=2)  # HiFi-GAN's meanpools (count_include_pad)
    torch.testing.assert_close(downsample_audio(audio, 2), hifigan_pool(audio))
    torch.testing.assert_close(downsample_audio(audio, 4), hifigan_pool(hifigan_pool(audio)))
    torch.testing.assert_close(downsample_audio(audio, 8),
                               hifigan_pool(hifigan_pool(hifigan_pool(audio))))
    # Taps of scale 4: output m averages x[4m-6 : 4m+4] with weights [1,1,2,2,2,2,2,2,1,1]/16.
    x = torch.arange(64, dtype=torch.float64).pow(2)[None, None]
    taps = torch.tensor([1, 1, 2, 2, 2, 2, 2, 2, 1, 1], dtype=torch.float64) / 16
    m = 5
    torch.testing.assert_close(downsample_audio(x, 4)[0, 0, m], (x[0, 0, 4 * m - 6: 4 * m + 4] * taps).sum())
    # Zeros count at the edge: the first scale-2 value is (0 + 0 + x0 + x1) / 4.
    torch.testing.assert_close(downsample_audio(x, 2)[0, 0, 0], (x[0, 0, 0] + x[0, 0, 1]) / 4)
    with pytest.raises(ValueError, match="powers of 2"):
        MultiScaleDiscriminator([1, 3])


def test_stft_filters_scale_above_one_builds_and_runs():
    disc = MultiScaleSTFTDiscriminator(4, 1, [128, 64], filters_scale=2, max_filters=12)
    sub = disc.discriminators[0]
    assert [c.in_channels for c in sub.convs] == [2, 4, 8, 12, 12]
    assert [c.out_channels for c in sub.convs] == [4, 8, 12, 12, 12]
    logits, features = disc(torch.randn(2, 1, 600))
    assert len(logits) == 2 and all(torch.isfinite(x).all() for x in logits)


def _norms(module: torch.nn.Module) -> set[str]:
    """Names of the parametrizations on the weights of every conv of ``module``."""
    found = set()
    for conv in module.modules():
        if isinstance(conv, (torch.nn.Conv1d, torch.nn.Conv2d)):
            plist = getattr(getattr(conv, "parametrizations", None), "weight", None)
            found.add(type(plist[0]).__name__ if plist is not None else "none")
    return found


def test_spectral_norm_option_on_every_audio_discriminator():
    stft_default, stft_sn = (MultiScaleSTFTDiscriminator(4, 1, [64], spectral_norm=sn) for sn in (False, True))
    assert _norms(stft_default) == {"none", "_WeightNorm"}  # EnCodec: no norm on the first conv
    assert _norms(stft_sn) == {"_SpectralNorm"}
    assert _norms(MultiPeriodDiscriminator([2], [4, 8])) == {"_WeightNorm"}
    assert _norms(MultiPeriodDiscriminator([2], [4, 8], spectral_norm=True)) == {"_SpectralNorm"}
    msd = MultiScaleDiscriminator([1, 2], channel_divisor=16)  # HiFi-GAN: spectral norm on scale 1 only
    assert _norms(msd.discriminators[0]) == {"_SpectralNorm"} and _norms(msd.discriminators[1]) == {"_WeightNorm"}
    assert _norms(MultiScaleDiscriminator([1, 2], channel_divisor=16, spectral_norm=True)) == {"_SpectralNorm"}
    full = EnCodecDiscriminator(4, 1, [64], msd_scales=[1, 2], msd_channel_divisor=16, mpd_periods=[2],
                                mpd_channels=[4], spectral_norm=True)
    assert _norms(full) == {"_SpectralNorm"}
    logits, _ = full(torch.randn(1, 1, 300))
    assert len(logits) == 1 + 2 + 1


def test_stft_channels_last_gives_the_same_outputs():
    torch.manual_seed(0)
    plain = MultiScaleSTFTDiscriminator(4, 1, [128, 64])
    fast = MultiScaleSTFTDiscriminator(4, 1, [128, 64], channels_last=True)
    fast.load_state_dict(plain.state_dict())
    conv = fast.discriminators[0].convs[1]
    assert conv.parametrizations.weight.original1.is_contiguous(memory_format=torch.channels_last)
    audio = torch.randn(2, 1, 500)
    for a, b in zip(plain(audio)[0], fast(audio)[0]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert EnCodecDiscriminator(4, 1, [64], use_msd=False, use_mpd=False, stft_channels_last=True)(audio)[0]
