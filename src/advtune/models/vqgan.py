"""VQ autoencoder of VQGAN (Esser et al. 2021, "Taming Transformers"), small and configurable.

Encoder → 1×1 ``quant_conv`` → :class:`VectorQuantizer` → 1×1 ``post_quant_conv`` → Decoder, as
taming-transformers' ``VQModel``. The encoder and decoder are convolutional ResNets: GroupNorm +
SiLU pre-activation residual blocks (He et al. 2016), one resolution level per entry of
``channel_multipliers`` (width ``base_channels · multiplier``), halving (encoder) / doubling
(decoder) the resolution between levels, two residual blocks in the middle. Unlike taming we leave
out the self-attention block of the middle: at the tiny sizes this project trains on CPU it costs
more than it brings. Downsampling is a stride-2 3×3 conv; upsampling nearest ×2 then a 3×3 conv.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from torch import Tensor, nn

from advtune.io import register_model
from advtune.models.vector_quantizer import VectorQuantizer, VectorQuantizerOutput

__all__ = [
    "Decoder",
    "Encoder",
    "ResidualBlock",
    "VQAutoencoder",
    "VQAutoencoderOutput",
    "VectorQuantizer",
    "VectorQuantizerOutput",
    "tiny_vq_autoencoder",
]


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with the most groups (at most 32, as taming) that keep >= 4 channels per group.

    taming uses 32 groups on layers of 128+ channels, i.e. at least 4 channels per group. Keeping
    that floor on narrow layers matters: one channel per group is instance normalisation, which
    erases each channel's mean over the patch (its colour and brightness) at every block; on the
    tiny preset that alone cost ~1.7 dB of validation PSNR after 500 steps.
    """
    if channels < 4:
        return nn.GroupNorm(1, channels, eps=1e-6)
    groups = max(g for g in range(1, 33) if channels % g == 0 and channels // g >= 4)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResidualBlock(nn.Module):
    """``x + conv(SiLU(norm(conv(SiLU(norm(x))))))``; a 1×1 conv maps the skip when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            group_norm(in_channels), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1),
            group_norm(out_channels), nn.SiLU(), nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in, H, W)`` → ``(B, out, H, W)``."""
        return self.skip(x) + self.body(x)


def _widths(base_channels: int, channel_multipliers: Sequence[int]) -> list[int]:
    if base_channels < 1 or not channel_multipliers or min(channel_multipliers) < 1:
        raise ValueError(
            f"VQ autoencoder: base_channels ({base_channels}) and every channel multiplier "
            f"({list(channel_multipliers)}) must be >= 1, with at least one multiplier"
        )
    return [base_channels * m for m in channel_multipliers]


class Encoder(nn.Module):
    """Image ``(B, in_channels, H, W)`` → latent ``(B, latent_channels, H/f, W/f)``, ``f = 2^(levels-1)``."""

    def __init__(self, in_channels: int, base_channels: int, channel_multipliers: Sequence[int],
                 num_res_blocks: int, latent_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        widths = _widths(base_channels, channel_multipliers)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        current = widths[0]
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers.append(ResidualBlock(current, width, dropout))
                current = width
            if level < len(widths) - 1:
                layers.append(nn.Conv2d(current, current, 3, stride=2, padding=1))
        layers += [ResidualBlock(current, current, dropout), ResidualBlock(current, current, dropout),
                   group_norm(current), nn.SiLU(), nn.Conv2d(current, latent_channels, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """See class docstring."""
        return self.layers(x)


class Decoder(nn.Module):
    """Latent ``(B, latent_channels, h, w)`` → image ``(B, out_channels, h·f, w·f)``; mirrors :class:`Encoder`."""

    def __init__(self, out_channels: int, base_channels: int, channel_multipliers: Sequence[int],
                 num_res_blocks: int, latent_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        widths = _widths(base_channels, channel_multipliers)[::-1]
        current = widths[0]
        layers: list[nn.Module] = [nn.Conv2d(latent_channels, current, 3, padding=1),
                                   ResidualBlock(current, current, dropout),
                                   ResidualBlock(current, current, dropout)]
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers.append(ResidualBlock(current, width, dropout))
                current = width
            if level < len(widths) - 1:
                layers += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(current, current, 3, padding=1)]
        layers += [group_norm(current), nn.SiLU()]
        self.layers = nn.Sequential(*layers)
        # Kept apart so tasks can hand its weight to the adaptive weight (taming's last_layer).
        self.conv_out = nn.Conv2d(current, out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        """See class docstring."""
        return self.conv_out(self.layers(z))


class VQAutoencoderOutput(NamedTuple):
    """``reconstruction`` ``(B, C, H, W)``, the quantizer's output, and the pre-quantization latent."""

    reconstruction: Tensor
    quantized: VectorQuantizerOutput
    latent: Tensor


@register_model
class VQAutoencoder(nn.Module):
    """VQGAN's autoencoder: ``decode(quantize(encode(x)))``.

    Args:
        in_channels: image channels (also the output channels).
        base_channels: width of the first level.
        channel_multipliers: one entry per resolution level; ``len - 1`` halvings.
        num_res_blocks: residual blocks per level.
        latent_channels: channels at the encoder output / decoder input (taming's ``z_channels``).
        code_dim: codebook vector size (taming's ``embed_dim``).
        num_codes: codebook entries (taming's ``n_embed``).
        beta: commitment weight of the quantizer.
        dropout: dropout inside the residual blocks.
        codebook_init: ``"uniform"`` (taming) or ``"data"`` (codes copied from the first training
            batch's latents; far fewer dead codes, see :mod:`advtune.models.vector_quantizer`).
        dead_code_threshold: restart codes used fewer times per batch than this (EMA); 0: never.
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 16,
                 channel_multipliers: Sequence[int] = (1, 2, 2), num_res_blocks: int = 1,
                 latent_channels: int = 32, code_dim: int = 8, num_codes: int = 128,
                 beta: float = 0.25, dropout: float = 0.0, codebook_init: str = "uniform",
                 dead_code_threshold: float = 0.0) -> None:
        super().__init__()
        multipliers = [int(m) for m in channel_multipliers]
        self.model_config: dict[str, Any] = {
            "in_channels": int(in_channels), "base_channels": int(base_channels),
            "channel_multipliers": multipliers, "num_res_blocks": int(num_res_blocks),
            "latent_channels": int(latent_channels), "code_dim": int(code_dim),
            "num_codes": int(num_codes), "beta": float(beta), "dropout": float(dropout),
            "codebook_init": str(codebook_init), "dead_code_threshold": float(dead_code_threshold),
        }
        self.downsampling_factor = 2 ** (len(multipliers) - 1)
        self.encoder = Encoder(in_channels, base_channels, multipliers, num_res_blocks, latent_channels, dropout)
        self.quant_conv = nn.Conv2d(latent_channels, code_dim, 1)
        self.quantizer = VectorQuantizer(num_codes, code_dim, beta, codebook_init, dead_code_threshold)
        self.post_quant_conv = nn.Conv2d(code_dim, latent_channels, 1)
        self.decoder = Decoder(in_channels, base_channels, multipliers, num_res_blocks, latent_channels, dropout)

    @property
    def last_layer(self) -> nn.Parameter:
        """Weight of the decoder's last conv, for the adaptive weight."""
        return self.decoder.conv_out.weight

    def encode(self, x: Tensor) -> Tensor:
        """Image ``(B, C, H, W)`` → continuous latent ``z_e`` ``(B, code_dim, H/f, W/f)`` (before quantization)."""
        if x.dim() != 4 or x.shape[-1] % self.downsampling_factor or x.shape[-2] % self.downsampling_factor:
            raise ValueError(
                f"VQAutoencoder.encode: expected (B, C, H, W) with H, W divisible by "
                f"{self.downsampling_factor}, got {tuple(x.shape)}"
            )
        return self.quant_conv(self.encoder(x))

    def decode(self, z_q: Tensor) -> Tensor:
        """Quantized latent ``(B, code_dim, h, w)`` → image ``(B, C, h·f, w·f)``."""
        return self.decoder(self.post_quant_conv(z_q))

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Code indices ``(B, h, w)`` → image ``(B, C, h·f, w·f)``."""
        return self.decode(self.quantizer.embed_indices(indices))

    def forward(self, x: Tensor) -> VQAutoencoderOutput:
        """Reconstruct ``x`` ``(B, C, H, W)``; gradients reach the encoder through the straight-through estimator."""
        latent = self.encode(x)
        quantized = self.quantizer(latent)
        return VQAutoencoderOutput(self.decode(quantized.quantized), quantized, latent)


def tiny_vq_autoencoder(**overrides: Any) -> VQAutoencoder:
    """The CPU preset: 16/32/32 channels, ×4 downsampling, 512 data-initialised codes of size 8 with dead-code
    restarts (~0.2 M parameters); ``experiment=vqgan`` builds the same from its config."""
    config: dict[str, Any] = {"in_channels": 3, "base_channels": 16, "channel_multipliers": (1, 2, 2),
                              "num_res_blocks": 1, "latent_channels": 32, "code_dim": 8, "num_codes": 512,
                              "codebook_init": "data", "dead_code_threshold": 1.0}
    config.update(overrides)
    return VQAutoencoder(**config)

