"""Multi-period waveform discriminator (MPD) of HiFi-GAN (Kong et al. 2020, section 2.2).

Sub-discriminator ``p`` folds the waveform ``(B, C, T)`` into ``(B, C, T/p, p)`` so that its
``(k, 1)`` 2-D convs compare samples ``p`` apart (periodic structure). With
``periods=[2, 3, 5, 7, 11]`` and ``channels=[32, 128, 512, 1024, 1024]`` on mono audio it has
41,105,770 parameters (weight norm ``g`` and ``v`` counted), HiFi-GAN's count.
``spectral_norm=True`` uses spectral norm instead of weight norm on every conv.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as spectral_norm_
from torch.nn.utils.parametrizations import weight_norm

from advtune.discriminators.base import DiscriminatorOutput

__all__ = ["PeriodSubDiscriminator", "MultiPeriodDiscriminator"]


class PeriodSubDiscriminator(nn.Module):
    """One period.

    Args:
        period: fold size ``p``.
        in_channels: audio channels.
        channels: output channels of each ``(kernel_size, 1)`` conv.
        kernel_size: kernel along the folded time axis.
        stride: time stride of every conv but the last.
        negative_slope: LeakyReLU slope (0.1 in HiFi-GAN).
        spectral_norm: spectral norm instead of weight norm on every conv.
    """

    def __init__(self, period: int, in_channels: int = 1,
                 channels: Sequence[int] = (32, 128, 512, 1024, 1024), kernel_size: int = 5,
                 stride: int = 3, negative_slope: float = 0.1, spectral_norm: bool = False) -> None:
        super().__init__()
        if int(period) < 1:
            raise ValueError(f"PeriodSubDiscriminator: period must be >= 1, got {period}")
        self.period, self.negative_slope = int(period), float(negative_slope)
        norm = spectral_norm_ if spectral_norm else weight_norm
        widths = [int(in_channels)] + [int(c) for c in channels]
        last = len(widths) - 2
        self.convs = nn.ModuleList(
            norm(nn.Conv2d(i, o, (kernel_size, 1), stride=(1 if n == last else stride, 1),
                                  padding=((kernel_size - 1) // 2, 0)))
            for n, (i, o) in enumerate(zip(widths[:-1], widths[1:])))
        self.conv_post = norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, audio: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits ``(B, 1, T'', p)``; features: every activation and, as in HiFi-GAN, the logits."""
        batch, channels, length = audio.shape
        missing = (-length) % self.period
        if missing:  # reflect-pad to a multiple of the period (zeros when the clip is too short)
            audio = F.pad(audio, (0, missing), mode="reflect" if missing < length else "constant")
        x = audio.reshape(batch, channels, -1, self.period)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.negative_slope)
            features.append(x)
        logits = self.conv_post(x)
        return logits, features + [logits]


class MultiPeriodDiscriminator(nn.Module):
    """One :class:`PeriodSubDiscriminator` per period.

    Args:
        periods: fold sizes (primes avoid overlap between sub-discriminators).
        channels: conv channels of every sub-discriminator.
        in_channels: audio channels.
        kernel_size: see :class:`PeriodSubDiscriminator`.
        stride: see :class:`PeriodSubDiscriminator`.
        negative_slope: LeakyReLU slope.
        spectral_norm: spectral norm instead of weight norm on every conv.
    """

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11),
                 channels: Sequence[int] = (32, 128, 512, 1024, 1024), in_channels: int = 1,
                 kernel_size: int = 5, stride: int = 3, negative_slope: float = 0.1,
                 spectral_norm: bool = False) -> None:
        super().__init__()
        if not list(periods) or not list(channels):
            raise ValueError("MultiPeriodDiscriminator: periods and channels must be non-empty")
        self.discriminators = nn.ModuleList(
            PeriodSubDiscriminator(int(p), in_channels, channels, int(kernel_size), int(stride),
                                   negative_slope, spectral_norm) for p in periods)

    def forward(self, x: Tensor, **cond: object) -> DiscriminatorOutput:
        """``x``: audio ``(B, C, T)``; ``cond`` is ignored. One logits tensor per period."""
        outputs = [disc(x) for disc in self.discriminators]
        return [logits for logits, _ in outputs], [features for _, features in outputs]
