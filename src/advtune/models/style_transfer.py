"""Style transfer in a frozen VQ latent space: ``z_y = transfer(z_content, z_style)``.

Design (ours; the modulation is AdaIN, Huang & Belongie 2017, applied inside a conv net as in
StyleGAN's style blocks, Karras et al. 2019):

1. **Style code.** The style latent is summarised by its per-channel spatial mean and log standard
   deviation, ``[μ(z_s), log σ(z_s)]`` ``(B, 2C)`` (the very statistics the style loss matches),
   and an MLP maps them to a style code ``s`` ``(B, style_dim)``. Pooling makes the module accept
   a style reference of any spatial size and ignore *where* things are in it.
2. **Content path.** A 3×3 conv lifts ``z_c`` to ``hidden_channels``; ``num_blocks`` residual
   blocks each apply ``AdaIN(h; s) = (1 + γ(s))·norm(h) + β(s)`` (instance norm without affine,
   ``γ, β`` linear in ``s``) → SiLU → 3×3 conv, twice.
3. **Residual output.** A last 3×3 conv predicts a *residual* added to the content latent,
   ``z_y = z_c + Δ(z_c, s)``. That conv starts at zero, so the untrained module is exactly the
   identity: training begins at zero content loss and only moves ``z_c`` as far as the style loss
   (and the discriminator) ask. Its weight is the generator's last layer for the adaptive weight.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from advtune.io import register_model

__all__ = ["AdaptiveInstanceNorm", "StyleTransferModule"]


class AdaptiveInstanceNorm(nn.Module):
    """``(1 + γ(s))·InstanceNorm(h) + β(s)``; ``γ = β = 0`` at initialisation (plain instance norm)."""

    def __init__(self, channels: int, style_dim: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False, eps=1e-5)
        self.to_scale_shift = nn.Linear(style_dim, 2 * channels)
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)

    def forward(self, h: Tensor, style: Tensor) -> Tensor:
        """``h`` ``(B, C, H, W)``, ``style`` ``(B, style_dim)`` → ``(B, C, H, W)``."""
        scale, shift = self.to_scale_shift(style)[:, :, None, None].chunk(2, dim=1)
        return (1.0 + scale) * self.norm(h) + shift


class _ModulatedResidualBlock(nn.Module):
    def __init__(self, channels: int, style_dim: int) -> None:
        super().__init__()
        self.norm1 = AdaptiveInstanceNorm(channels, style_dim)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = AdaptiveInstanceNorm(channels, style_dim)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.activation = nn.SiLU()

    def forward(self, h: Tensor, style: Tensor) -> Tensor:
        out = self.conv1(self.activation(self.norm1(h, style)))
        out = self.conv2(self.activation(self.norm2(out, style)))
        return h + out


@register_model
class StyleTransferModule(nn.Module):
    """Maps a content latent towards the statistics of a style latent (see module docstring).

    Args:
        latent_channels: channels ``C`` of the latents (the VQ autoencoder's ``code_dim``).
        hidden_channels: width of the content path.
        num_blocks: modulated residual blocks.
        style_dim: size of the style code.
        eps: added to the variance before ``log σ``.
    """

    def __init__(self, latent_channels: int = 8, hidden_channels: int = 64, num_blocks: int = 2,
                 style_dim: int = 64, eps: float = 1e-5) -> None:
        super().__init__()
        if min(latent_channels, hidden_channels, style_dim) < 1 or num_blocks < 0:
            raise ValueError(
                "StyleTransferModule: latent_channels, hidden_channels and style_dim must be >= 1 and "
                f"num_blocks >= 0, got {latent_channels}, {hidden_channels}, {style_dim}, {num_blocks}"
            )
        self.model_config: dict[str, Any] = {
            "latent_channels": int(latent_channels), "hidden_channels": int(hidden_channels),
            "num_blocks": int(num_blocks), "style_dim": int(style_dim), "eps": float(eps),
        }
        self.latent_channels = int(latent_channels)
        self.eps = float(eps)
        self.style_mlp = nn.Sequential(
            nn.Linear(2 * latent_channels, style_dim), nn.SiLU(), nn.Linear(style_dim, style_dim)
        )
        self.conv_in = nn.Conv2d(latent_channels, hidden_channels, 3, padding=1)
        self.blocks = nn.ModuleList(_ModulatedResidualBlock(hidden_channels, style_dim) for _ in range(num_blocks))
        self.activation = nn.SiLU()
        self.conv_out = nn.Conv2d(hidden_channels, latent_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def last_layer(self) -> nn.Parameter:
        """Weight of the residual output conv (the generator's last trainable layer)."""
        return self.conv_out.weight

    def style_code(self, z_style: Tensor) -> Tensor:
        """``z_style`` ``(B, C, H, W)`` → style code ``(B, style_dim)`` from ``[μ, log σ]`` per channel."""
        flat = z_style.flatten(start_dim=2)
        statistics = torch.cat([flat.mean(dim=2), 0.5 * torch.log(flat.var(dim=2, unbiased=False) + self.eps)], dim=1)
        return self.style_mlp(statistics)

    def transfer(self, z_content: Tensor, z_style: Tensor) -> Tensor:
        """``z_content`` ``(B, C, H, W)``, ``z_style`` ``(B, C, H', W')`` → ``z_y`` ``(B, C, H, W)``."""
        for name, z in (("z_content", z_content), ("z_style", z_style)):
            if z.dim() != 4 or z.shape[1] != self.latent_channels:
                raise ValueError(
                    f"StyleTransferModule.transfer: {name} must be (B, {self.latent_channels}, H, W), "
                    f"got {tuple(z.shape)}"
                )
        if z_content.shape[0] != z_style.shape[0]:
            raise ValueError(
                f"StyleTransferModule.transfer: batch sizes differ, {z_content.shape[0]} vs {z_style.shape[0]}"
            )
        return self.apply_style(z_content, self.style_code(z_style))

    def apply_style(self, z_content: Tensor, style: Tensor) -> Tensor:
        """``z_content`` ``(B, C, H, W)`` and a style code ``(B or 1, style_dim)`` → ``z_y`` ``(B, C, H, W)``.

        :meth:`transfer` with the style code computed once (``advtune stylize`` reuses one style
        code for every tile and image).
        """
        h = self.conv_in(z_content)
        for block in self.blocks:
            h = block(h, style)
        return z_content + self.conv_out(self.activation(h))

    def forward(self, z_content: Tensor, z_style: Tensor) -> Tensor:
        """Same as :meth:`transfer`."""
        return self.transfer(z_content, z_style)
