"""A 1-D convolutional variational autoencoder for waveforms (SEANet / EnCodec-style backbone).

Encoder: conv → [dilated residual units → strided conv] per level → conv to ``2 * latent_dim``
(mean, log-variance). Decoder mirrors it with transposed convs. The latent is Gaussian with the
reparameterisation trick of Kingma & Welling (2014), "Auto-Encoding Variational Bayes".
The residual units with dilations ``1, 3, 9`` follow SoundStream (Zeghidour et al. 2021) and
EnCodec (Défossez et al. 2022).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from advtune.io import register_model

__all__ = ["AudioVAE", "ResidualUnit"]


def _ints(values: Sequence[int], name: str) -> list[int]:
    """Plain ``list[int]`` (Hydra passes ``ListConfig``); every entry must be >= 1."""
    out = [int(v) for v in values]
    if not out or min(out) < 1:
        raise ValueError(f"AudioVAE: {name} must be a non-empty list of positive ints, got {out}")
    return out


class ResidualUnit(nn.Module):
    """``x + conv1x1(elu(conv_k,dilated(elu(x))))``; keeps ``(B, C, T)``."""

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.dilated = weight_norm(nn.Conv1d(channels, channels, kernel_size, dilation=dilation,
                                             padding=padding))
        self.pointwise = weight_norm(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pointwise(F.elu(self.dilated(F.elu(x))))


class _Downsample(nn.Module):
    """Strided conv (kernel ``2 * stride``) mapping length ``T`` to exactly ``T / stride``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.pad = (math.ceil(stride / 2), stride // 2)  # total pad = kernel - stride
        self.conv = weight_norm(nn.Conv1d(in_channels, out_channels, 2 * stride, stride=stride))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(F.elu(x), self.pad))


class _Upsample(nn.Module):
    """Transposed conv (kernel ``2 * stride``) mapping length ``L`` to exactly ``L * stride``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.crop = (math.ceil(stride / 2), stride // 2)  # the transposed conv yields L*s + s
        self.conv = weight_norm(nn.ConvTranspose1d(in_channels, out_channels, 2 * stride,
                                                   stride=stride))

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(F.elu(x))
        return y[..., self.crop[0]: y.shape[-1] - self.crop[1]]


@register_model
class AudioVAE(nn.Module):
    """Waveform VAE with learned latent statistics and an encoder freeze switch.

    Args:
        in_channels: audio channels (1 mono, 2 stereo).
        base_channels: width of the first level; level ``i`` has ``base * channel_mults[i]``.
        channel_mults: width multiplier per level; same length as ``strides``.
        strides: down-sampling factor per level; the hop (samples per latent frame) is their product.
        latent_dim: channels of the latent ``z``.
        kernel_size: kernel of the input, output and dilated convs (odd).
        dilations: dilations of the residual units of every level.
        latent_momentum: EMA momentum of ``latent_mean`` / ``latent_std``.

    ``latent_mean`` and ``latent_std`` (buffers, ``(latent_dim,)``) are an exponential moving
    average, updated in every training-mode forward, of the per-channel mean and std of the sampled
    ``z`` over batch and time; the first update copies the batch statistics. Downstream latent
    models use :meth:`normalize_latent` to work on ``(z - mean) / std``.
    """

    def __init__(self, in_channels: int = 2, base_channels: int = 128,
                 channel_mults: Sequence[int] = (1, 2, 4, 8), strides: Sequence[int] = (2, 4, 4, 8),
                 latent_dim: int = 64, kernel_size: int = 7, dilations: Sequence[int] = (1, 3, 9),
                 latent_momentum: float = 0.01) -> None:
        super().__init__()
        mults, strides, dilations = (_ints(channel_mults, "channel_mults"),
                                     _ints(strides, "strides"), _ints(dilations, "dilations"))
        if len(mults) != len(strides):
            raise ValueError(f"AudioVAE: channel_mults {mults} and strides {strides} must have "
                             "the same length (one entry per level)")
        if int(kernel_size) % 2 != 1:
            raise ValueError(f"AudioVAE: kernel_size must be odd, got {kernel_size}")
        if not 0.0 < float(latent_momentum) <= 1.0:
            raise ValueError(f"AudioVAE: latent_momentum must be in (0, 1], got {latent_momentum}")
        self.model_config = {
            "in_channels": int(in_channels), "base_channels": int(base_channels),
            "channel_mults": mults, "strides": strides, "latent_dim": int(latent_dim),
            "kernel_size": int(kernel_size), "dilations": dilations,
            "latent_momentum": float(latent_momentum),
        }
        k, pad = int(kernel_size), int(kernel_size) // 2
        widths = [int(base_channels) * m for m in mults]
        outs = widths[1:] + [widths[-1]]  # channels after each level's down-sampling
        self.latent_dim, self.hop_length = int(latent_dim), math.prod(strides)
        self.latent_momentum = float(latent_momentum)

        enc: list[nn.Module] = [weight_norm(nn.Conv1d(int(in_channels), widths[0], k, padding=pad))]
        for width, out, stride in zip(widths, outs, strides):
            enc += [ResidualUnit(width, k, d) for d in dilations]
            enc.append(_Downsample(width, out, stride))
        enc += [nn.ELU(), weight_norm(nn.Conv1d(outs[-1], 2 * self.latent_dim, k, padding=pad))]
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [weight_norm(nn.Conv1d(self.latent_dim, outs[-1], k, padding=pad))]
        for width, out, stride in reversed(list(zip(widths, outs, strides))):
            dec.append(_Upsample(out, width, stride))
            dec += [ResidualUnit(width, k, d) for d in dilations]
        dec.append(nn.ELU())
        self.decoder = nn.Sequential(*dec)
        # Plain conv (no weight norm) so `last_layer` is a real Parameter for the adaptive weight.
        self.output_conv = nn.Conv1d(widths[0], int(in_channels), k, padding=pad)

        self.register_buffer("latent_mean", torch.zeros(self.latent_dim))
        self.register_buffer("latent_std", torch.ones(self.latent_dim))
        self.register_buffer("latent_updates", torch.zeros((), dtype=torch.long))
        self._encoder_frozen = False

    @classmethod
    def tiny(cls, in_channels: int = 1) -> "AudioVAE":
        """A ~75k-parameter preset (hop 32) that trains on CPU in minutes."""
        return cls(in_channels=in_channels, base_channels=8, channel_mults=(1, 2, 4),
                   strides=(2, 4, 4), latent_dim=8, kernel_size=7, dilations=(1, 3))

    @property
    def encoder_frozen(self) -> bool:
        """When ``True`` the encoder's parameters get no gradient and it runs under no_grad."""
        return self._encoder_frozen

    @encoder_frozen.setter
    def encoder_frozen(self, frozen: bool) -> None:
        self._encoder_frozen = bool(frozen)
        self.encoder.requires_grad_(not self._encoder_frozen)

    @property
    def last_layer(self) -> Tensor:
        """Weight of the output conv, for the adaptive adversarial weight (Esser et al. 2021)."""
        return self.output_conv.weight

    def encode(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, T)`` with ``T % hop_length == 0`` -> mean, logvar ``(B, latent_dim, T/hop)``."""
        if audio.dim() != 3 or audio.shape[-1] % self.hop_length:
            raise ValueError(f"AudioVAE.encode expects (B, C, T) with T a multiple of "
                             f"{self.hop_length}, got {tuple(audio.shape)}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self._encoder_frozen):
            mean, logvar = self.encoder(audio).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: Tensor) -> Tensor:
        """``(B, latent_dim, L)`` -> audio ``(B, C, L * hop_length)``."""
        return self.output_conv(self.decoder(z))

    def normalize_latent(self, z: Tensor) -> Tensor:
        return (z - self.latent_mean[:, None]) / self.latent_std[:, None]

    def denormalize_latent(self, z: Tensor) -> Tensor:
        return z * self.latent_std[:, None] + self.latent_mean[:, None]

    @torch.no_grad()
    def _update_latent_statistics(self, z: Tensor) -> None:
        mean = z.mean(dim=(0, 2))
        std = z.transpose(0, 1).flatten(1).std(dim=1, unbiased=False).clamp_min(1e-5)
        rate = 1.0 if int(self.latent_updates) == 0 else self.latent_momentum
        self.latent_mean.lerp_(mean.to(self.latent_mean.dtype), rate)
        self.latent_std.lerp_(std.to(self.latent_std.dtype), rate)
        self.latent_updates += 1

    def forward(self, audio: Tensor, sample_posterior: bool | None = None
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Reconstruct ``audio``.

        Args:
            audio: ``(B, C, T)``; padded on the right to a multiple of ``hop_length`` and the
                reconstruction cropped back to ``T``.
            sample_posterior: draw ``z = mean + std * eps``; default: in training mode only
                (evaluation uses the posterior mean, deterministic).

        Returns:
            ``(recon (B, C, T), z, mean, logvar)``, the last three ``(B, latent_dim, ceil(T/hop))``.
        """
        length = audio.shape[-1]
        audio = F.pad(audio, (0, (-length) % self.hop_length))
        mean, logvar = self.encode(audio)
        sample = self.training if sample_posterior is None else sample_posterior
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample else mean
        if self.training:
            self._update_latent_statistics(z)
        return self.decode(z)[..., :length], z, mean, logvar
