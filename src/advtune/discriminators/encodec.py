"""EnCodec-style audio discriminator: MS-STFT, optionally with HiFi-GAN's MSD and MPD.

EnCodec (Défossez et al. 2022) trains against the multi-scale STFT discriminator; many codecs and
VAEs (DAC, Kumar et al. 2023; Stable Audio's VAE) add waveform discriminators. The outputs are the
concatenated ``(logits, features)`` lists in the order STFT scales, MSD scales, MPD periods.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from advtune.discriminators.audio_mpd import MultiPeriodDiscriminator
from advtune.discriminators.audio_msd import MultiScaleDiscriminator
from advtune.discriminators.audio_stft import MultiScaleSTFTDiscriminator
from advtune.discriminators.base import DiscriminatorOutput

__all__ = ["EnCodecDiscriminator"]


class EnCodecDiscriminator(nn.Module):
    """MS-STFT + MSD + MPD on waveforms ``(B, C, T)``.

    Args:
        stft_filters: base channels of every STFT sub-discriminator.
        in_channels: audio channels.
        n_ffts: FFT sizes of the STFT scales (hop ``n_fft/4``, window ``n_fft``).
        use_msd: add the multi-scale waveform discriminator.
        msd_scales: its pooling factors.
        msd_channel_divisor: shrink the MSD widths (1 = HiFi-GAN's).
        use_mpd: add the multi-period discriminator.
        mpd_periods: its periods.
        mpd_channels: its conv channels.
        stft_hop_lengths: override the STFT hops.
        stft_win_lengths: override the STFT windows.
        spectral_norm: spectral norm instead of weight norm on every conv of every part (the
            MSD's raw-rate scale has it either way, as in HiFi-GAN).
        stft_channels_last: channels-last conv weights in the MS-STFT part (same numbers, faster
            on CPU; the MPD's ``(k, 1)`` convs did not gain, so they stay as they are).
    """

    def __init__(self, stft_filters: int = 32, in_channels: int = 2,
                 n_ffts: Sequence[int] = (2048, 1024, 512, 256, 128), use_msd: bool = True,
                 msd_scales: Sequence[int] = (1, 2, 4), msd_channel_divisor: int = 1,
                 use_mpd: bool = True,
                 mpd_periods: Sequence[int] = (2, 3, 5, 7, 11),
                 mpd_channels: Sequence[int] = (32, 128, 512, 1024, 1024),
                 stft_hop_lengths: Sequence[int] | None = None,
                 stft_win_lengths: Sequence[int] | None = None, spectral_norm: bool = False,
                 stft_channels_last: bool = False) -> None:
        super().__init__()
        self.stft = MultiScaleSTFTDiscriminator(stft_filters, in_channels, n_ffts, stft_hop_lengths,
                                                stft_win_lengths, channels_last=stft_channels_last,
                                                spectral_norm=spectral_norm)
        self.msd = (MultiScaleDiscriminator(msd_scales, in_channels, channel_divisor=msd_channel_divisor,
                                            spectral_norm=spectral_norm)
                    if use_msd else None)
        self.mpd = (MultiPeriodDiscriminator(mpd_periods, mpd_channels, in_channels,
                                             spectral_norm=spectral_norm)
                    if use_mpd else None)

    @property
    def num_discriminators(self) -> int:
        """Length of the logits / features lists returned by :meth:`forward`."""
        return sum(len(part.discriminators) for part in (self.stft, self.msd, self.mpd)
                   if part is not None)

    def forward(self, x: Tensor, **cond: object) -> DiscriminatorOutput:
        """``x``: audio ``(B, C, T)``; ``cond`` is ignored."""
        logits: list[Tensor] = []
        features: list[list[Tensor]] = []
        for part in (self.stft, self.msd, self.mpd):
            if part is not None:
                part_logits, part_features = part(x)
                logits += part_logits
                features += part_features
        return logits, features
