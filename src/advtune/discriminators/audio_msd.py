"""Multi-scale waveform discriminator (MSD) of MelGAN / HiFi-GAN.

Kumar et al. 2019, "MelGAN"; Kong et al. 2020, "HiFi-GAN", section 2.3. Each sub-discriminator is a
stack of grouped, strided 1-D convs; sub-discriminator ``k`` sees the waveform average-pooled by
``scales[k]``. The first (raw-rate) one uses spectral norm, the others weight norm, as in HiFi-GAN;
at ``scales=[1, 2, 4]`` on mono audio this gives 29,618,821 parameters (spectral norm's ``u``/``v``
are buffers, weight norm's ``g`` and ``v`` are parameters). ``spectral_norm=True`` puts spectral
norm on every scale (``spectral_norm_first`` keeps HiFi-GAN's choice: the raw-rate scale only).

Pooling follows HiFi-GAN: a factor ``2^k`` is ``k`` successive ``AvgPool1d(4, 2, padding=2)``
passes, zero padding counted in the average (``count_include_pad=True``), so scale 4 is a 10-tap
trapezoid ``[1, 1, 2, 2, 2, 2, 2, 2, 1, 1] / 16`` with stride 4, not one 8-tap box. One widely used
reference implementation computes the pooled signal for the later scales and then discards it, so
all its scales see the same raw audio; here each scale really sees its pooled input, and
``tests/discriminators/test_disc_audio.py`` checks lengths and taps.
"""

from __future__ import annotations

from math import gcd
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from advtune.discriminators.base import DiscriminatorOutput

__all__ = ["ScaleSubDiscriminator", "MultiScaleDiscriminator"]

# (in, out, kernel, stride, groups) of HiFi-GAN's DiscriminatorS after the first conv.
_LAYOUT = ((128, 128, 41, 2, 4), (128, 256, 41, 2, 16), (256, 512, 41, 4, 16),
           (512, 1024, 41, 4, 16), (1024, 1024, 41, 1, 16), (1024, 1024, 5, 1, 1))


class ScaleSubDiscriminator(nn.Module):
    """HiFi-GAN's scale discriminator on ``(B, C, T)`` audio.

    Args:
        in_channels: audio channels.
        use_spectral_norm: spectral norm instead of weight norm on every conv.
        negative_slope: LeakyReLU slope (0.1 in HiFi-GAN).
        channel_divisor: divide every width by this (1 = HiFi-GAN; 16 for CPU demos); groups
            shrink to the largest divisor of both widths.
    """

    def __init__(self, in_channels: int = 1, use_spectral_norm: bool = False,
                 negative_slope: float = 0.1, channel_divisor: int = 1) -> None:
        super().__init__()
        if channel_divisor < 1 or 128 % channel_divisor:
            raise ValueError(f"ScaleSubDiscriminator: channel_divisor must divide 128, got "
                             f"{channel_divisor}")
        norm = spectral_norm if use_spectral_norm else weight_norm
        self.negative_slope = float(negative_slope)
        div = int(channel_divisor)
        layers = [norm(nn.Conv1d(int(in_channels), 128 // div, 15, padding=7))]
        for i, o, k, s, g in _LAYOUT:
            i, o = i // div, o // div
            layers.append(norm(nn.Conv1d(i, o, k, stride=s, groups=gcd(g, i, o),
                                         padding=(k - 1) // 2)))
        self.convs = nn.ModuleList(layers)
        self.conv_post = norm(nn.Conv1d(1024 // div, 1, 3, padding=1))

    def forward(self, audio: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits ``(B, 1, T')``; features: every activation and, as in HiFi-GAN, the logits."""
        x, features = audio, []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.negative_slope)
            features.append(x)
        logits = self.conv_post(x)
        return logits, features + [logits]


def downsample_audio(audio: Tensor, factor: int) -> Tensor:
    """Pool ``(B, C, T)`` by ``factor`` (a power of 2) as HiFi-GAN does: ``log2(factor)`` passes of
    ``AvgPool1d(4, 2, padding=2)`` (zeros counted); each pass maps length ``L`` to ``L // 2 + 1``."""
    if factor < 1 or factor & (factor - 1):
        raise ValueError(f"downsample_audio: factor must be a power of 2, got {factor}")
    while factor > 1:
        audio = F.avg_pool1d(audio, 4, stride=2, padding=2, count_include_pad=True)
        factor //= 2
    return audio


class MultiScaleDiscriminator(nn.Module):
    """Sub-discriminators on the waveform average-pooled by each of ``scales``.

    Args:
        scales: pooling factor per sub-discriminator, powers of 2 (1 = raw audio).
        in_channels: audio channels.
        spectral_norm_first: spectral norm on the first sub-discriminator (HiFi-GAN), weight norm
            on the rest.
        spectral_norm: spectral norm on every sub-discriminator (overrides the above).
        negative_slope: LeakyReLU slope.
        channel_divisor: see :class:`ScaleSubDiscriminator`.
    """

    def __init__(self, scales: Sequence[int] = (1, 2, 4), in_channels: int = 1,
                 spectral_norm_first: bool = True, negative_slope: float = 0.1,
                 channel_divisor: int = 1, spectral_norm: bool = False) -> None:
        super().__init__()
        self.scales = [int(s) for s in scales]
        if not self.scales or min(self.scales) < 1 or any(s & (s - 1) for s in self.scales):
            raise ValueError(f"MultiScaleDiscriminator: scales must be powers of 2 (1, 2, 4, ...), "
                             f"got {self.scales}")
        self.discriminators = nn.ModuleList(
            ScaleSubDiscriminator(in_channels, spectral_norm or (spectral_norm_first and index == 0),
                                  negative_slope, channel_divisor)
            for index in range(len(self.scales)))

    def forward(self, x: Tensor, **cond: object) -> DiscriminatorOutput:
        """``x``: audio ``(B, C, T)``; ``cond`` is ignored. One logits tensor per scale."""
        logits, features = [], []
        for scale, disc in zip(self.scales, self.discriminators):
            scale_logits, scale_features = disc(downsample_audio(x, scale))
            logits.append(scale_logits)
            features.append(scale_features)
        return logits, features
