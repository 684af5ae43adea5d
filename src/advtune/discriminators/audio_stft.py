"""Multi-scale STFT discriminator of EnCodec (Défossez et al. 2022, "High Fidelity Neural Audio
Compression", section 3.4).

Each sub-discriminator takes the complex STFT of the waveform at one resolution (real and imaginary
parts stacked as channels, ``(B, 2C, frames, freq)``) through 2-D convs dilated along time and
strided along frequency. At ``filters=32, in_channels=1`` and five FFT sizes
``[1024, 2048, 512, 256, 128]`` (hop ``n_fft/4``, window ``n_fft``) it has 472,330 parameters,
the count of audiocraft's ``MultiScaleSTFTDiscriminator``: weight norm (``g`` and ``v`` counted) on
every conv except the first. ``spectral_norm=True`` puts spectral norm on every conv instead (the
first too, so the whole network's Lipschitz bound holds).

Channels with ``filters_scale > 1``: the first conv outputs ``filters`` channels and the dilated
conv ``i`` outputs ``filters * filters_scale ** (i + 1)`` (capped at ``max_filters``). audiocraft
feeds the first dilated conv ``filters * filters_scale`` channels, which only matches at
``filters_scale=1`` (any other value crashes there); here each conv takes what the previous one
outputs.

``channels_last=True`` stores the conv weights in channels-last memory format: the same numbers
(differences ~1e-7), and on a CPU forward+backward of the 2-D convs ran about 1.6x faster
(``benchmarks/bench_audio_step.py --channels-last``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as spectral_norm_
from torch.nn.utils.parametrizations import weight_norm

from advtune.discriminators.base import DiscriminatorOutput

__all__ = ["STFTSubDiscriminator", "MultiScaleSTFTDiscriminator"]


def _same_padding(kernel: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    return ((kernel[0] - 1) * dilation[0] // 2, (kernel[1] - 1) * dilation[1] // 2)


class STFTSubDiscriminator(nn.Module):
    """One STFT resolution.

    Args:
        filters: channels of every conv (times ``filters_scale ** i``, capped at ``max_filters``).
        in_channels: audio channels ``C``; the spectrogram has ``2C`` (real, imaginary).
        n_fft: FFT size.
        hop_length: hop between frames.
        win_length: Hann window length.
        max_filters: cap on channels.
        filters_scale: channel growth per dilated conv.
        kernel_size: ``(time, freq)`` kernel of the dilated convs.
        dilations: time dilations of the strided convs.
        stride: ``(time, freq)`` stride of the dilated convs.
        negative_slope: LeakyReLU slope.
        spectral_norm: spectral norm on every conv instead of weight norm (first conv: none).
    """

    def __init__(self, filters: int, in_channels: int = 1, n_fft: int = 1024, hop_length: int = 256,
                 win_length: int = 1024, max_filters: int = 1024, filters_scale: int = 1,
                 kernel_size: Sequence[int] = (3, 9), dilations: Sequence[int] = (1, 2, 4),
                 stride: Sequence[int] = (1, 2), negative_slope: float = 0.2,
                 spectral_norm: bool = False) -> None:
        super().__init__()
        if win_length > n_fft:
            raise ValueError(f"STFTSubDiscriminator: win_length {win_length} > n_fft {n_fft}")
        self.n_fft, self.hop_length, self.win_length = int(n_fft), int(hop_length), int(win_length)
        self.negative_slope = float(negative_slope)
        kernel = (int(kernel_size[0]), int(kernel_size[1]))
        square = (kernel[0], kernel[0])
        # Normalise like torchaudio's Spectrogram(normalized=True): divide by the window's L2 norm.
        window = torch.hann_window(self.win_length)
        self.register_buffer("window", window / window.pow(2).sum().sqrt(), persistent=False)

        norm = spectral_norm_ if spectral_norm else weight_norm
        # The first conv has no weight norm (as in EnCodec's reference), the others do.
        first = nn.Conv2d(2 * int(in_channels), filters, kernel, padding=_same_padding(kernel))
        layers = [spectral_norm_(first) if spectral_norm else first]
        channels = filters  # what the first conv outputs (audiocraft assumes filters_scale * filters)
        for index, dilation in enumerate(dilations):
            out = min(filters_scale ** (index + 1) * filters, max_filters)
            layers.append(norm(nn.Conv2d(
                channels, out, kernel, stride=tuple(int(s) for s in stride),
                dilation=(int(dilation), 1), padding=_same_padding(kernel, (int(dilation), 1)))))
            channels = out
        out = min(filters_scale ** (len(dilations) + 1) * filters, max_filters)
        layers.append(norm(nn.Conv2d(channels, out, square, padding=_same_padding(square))))
        self.convs = nn.ModuleList(layers)
        self.conv_post = norm(nn.Conv2d(out, 1, square, padding=_same_padding(square)))

    def spectrogram(self, audio: Tensor) -> Tensor:
        """``(B, C, T)`` -> ``(B, 2C, frames, n_fft // 2 + 1)`` (no centring, like EnCodec)."""
        batch, channels, length = audio.shape
        if length < self.n_fft:  # too short for one frame: zero-pad rather than fail
            audio = F.pad(audio, (0, self.n_fft - length))
        spec = torch.stft(audio.reshape(batch * channels, -1).float(), self.n_fft, self.hop_length,
                          self.win_length, window=self.window, center=False, return_complex=True)
        spec = spec.reshape(batch, channels, *spec.shape[-2:])
        return torch.cat([spec.real, spec.imag], dim=1).transpose(-1, -2).to(audio.dtype)

    def forward(self, audio: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits ``(B, 1, frames, freq')`` and the activation after every conv but the last."""
        x = self.spectrogram(audio)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.negative_slope)
            features.append(x)
        return self.conv_post(x), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """Several :class:`STFTSubDiscriminator` at different FFT sizes.

    Args:
        filters: base channels of each sub-discriminator.
        in_channels: audio channels.
        n_ffts: FFT size per scale.
        hop_lengths: hop per scale; default ``n_fft // 4`` (EnCodec / audiocraft).
        win_lengths: window per scale; default ``n_fft``.
        channels_last: keep the conv weights in channels-last memory format (faster on CPU).
        **kwargs: passed to :class:`STFTSubDiscriminator` (``kernel_size``, ``dilations``,
            ``filters_scale``, ``spectral_norm``, ...).
    """

    def __init__(self, filters: int = 32, in_channels: int = 1,
                 n_ffts: Sequence[int] = (1024, 2048, 512, 256, 128),
                 hop_lengths: Sequence[int] | None = None, win_lengths: Sequence[int] | None = None,
                 channels_last: bool = False, **kwargs) -> None:
        super().__init__()
        n_ffts = [int(n) for n in n_ffts]
        hops = [n // 4 for n in n_ffts] if hop_lengths is None else [int(h) for h in hop_lengths]
        wins = list(n_ffts) if win_lengths is None else [int(w) for w in win_lengths]
        if not n_ffts or not len(n_ffts) == len(hops) == len(wins):
            raise ValueError(f"MultiScaleSTFTDiscriminator: n_ffts {n_ffts}, hop_lengths {hops} and "
                             f"win_lengths {wins} must be non-empty and of equal length")
        self.discriminators = nn.ModuleList(
            STFTSubDiscriminator(int(filters), int(in_channels), n, h, w, **kwargs)
            for n, h, w in zip(n_ffts, hops, wins))
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor, **cond: object) -> DiscriminatorOutput:
        """``x``: audio ``(B, C, T)``; ``cond`` is ignored. One logits tensor per FFT size."""
        outputs = [disc(x) for disc in self.discriminators]
        return [logits for logits, _ in outputs], [features for _, features in outputs]
