"""Generators and a discriminator for the classic GAN on 8×8 digits.

* :class:`MLPGenerator` is the generator of Lightning's manual-optimization GAN tutorial
  ("basic-gan"), itself the MLP of Goodfellow et al. 2014 as popularised by PyTorch-GAN: four
  Linear blocks 128→256→512→1024 with LeakyReLU(0.2), BatchNorm1d after every Linear but the
  first (with ``eps=0.8``: the tutorial passes 0.8 as BatchNorm1d's second positional argument,
  which is ``eps``, not ``momentum``; we keep it to reproduce the tutorial), then Linear + Tanh.
* :class:`DCGANGenerator` / :class:`DCGANDiscriminator` follow Radford et al. 2016 (DCGAN):
  strided (transposed) convolutions, BatchNorm + ReLU in G, LeakyReLU(0.2) in D.

Every model stores its JSON-able constructor kwargs in ``self.model_config`` so
:func:`advtune.io.save_model` can rebuild it by class name.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from advtune.discriminators.base import DiscriminatorOutput
from advtune.io import register_model

__all__ = ["MLPGenerator", "DCGANGenerator", "DCGANDiscriminator"]


def _check_image_size(image_size: int, where: str) -> int:
    image_size = int(image_size)
    if image_size < 4 or image_size & (image_size - 1):
        raise ValueError(f"{where}: image_size must be a power of two >= 4, got {image_size}")
    return image_size


@register_model
class MLPGenerator(nn.Module):
    """Noise ``(B, latent_dim)`` → image ``(B, *img_shape)`` in [-1, 1] (Lightning GAN tutorial).

    Args:
        latent_dim: size of the noise vector.
        img_shape: ``(C, H, W)`` of the output.
        hidden_dims: widths of the Linear blocks; the tutorial uses ``(128, 256, 512, 1024)``.
    """

    def __init__(
        self,
        latent_dim: int = 100,
        img_shape: Sequence[int] = (1, 8, 8),
        hidden_dims: Sequence[int] = (128, 256, 512, 1024),
    ) -> None:
        super().__init__()
        img_shape = tuple(int(s) for s in img_shape)
        hidden_dims = tuple(int(h) for h in hidden_dims)
        if len(img_shape) != 3:
            raise ValueError(f"MLPGenerator: img_shape must be (C, H, W), got {img_shape}")
        if not hidden_dims:
            raise ValueError("MLPGenerator: hidden_dims must name at least one layer width")
        self.model_config: dict[str, Any] = {
            "latent_dim": int(latent_dim),
            "img_shape": list(img_shape),
            "hidden_dims": list(hidden_dims),
        }
        self.latent_dim = int(latent_dim)
        self.img_shape = img_shape

        layers: list[nn.Module] = []
        in_features = self.latent_dim
        for index, width in enumerate(hidden_dims):
            layers.append(nn.Linear(in_features, width))
            if index > 0:  # the tutorial normalises every block but the first
                layers.append(nn.BatchNorm1d(width, eps=0.8))
            layers.append(nn.LeakyReLU(0.2))
            in_features = width
        layers += [nn.Linear(in_features, math.prod(img_shape)), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim)`` → ``(B, C, H, W)``."""
        return self.model(z.flatten(1)).view(z.shape[0], *self.img_shape)


@register_model
class DCGANGenerator(nn.Module):
    """DCGAN generator: noise ``(B, latent_dim)`` → ``(B, channels, image_size, image_size)``.

    A 4×4 map from one transposed convolution, then one ×2 transposed-convolution stage per
    doubling up to ``image_size`` (one stage for 8×8), then a 3×3 convolution to ``channels``
    and Tanh. Widths halve at each stage and end at ``base_channels``.

    Args:
        latent_dim: size of the noise vector.
        channels: output channels.
        base_channels: width of the last stage.
        image_size: output height and width (power of two >= 4; 8 for the digits).
    """

    def __init__(
        self, latent_dim: int = 64, channels: int = 1, base_channels: int = 64, image_size: int = 8
    ) -> None:
        super().__init__()
        image_size = _check_image_size(image_size, "DCGANGenerator")
        self.model_config: dict[str, Any] = {
            "latent_dim": int(latent_dim),
            "channels": int(channels),
            "base_channels": int(base_channels),
            "image_size": image_size,
        }
        self.latent_dim = int(latent_dim)
        num_up = int(math.log2(image_size)) - 2  # 4 → image_size
        width = int(base_channels) * 2**num_up
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(self.latent_dim, width, 4, 1, 0, bias=False),  # 1×1 → 4×4
            nn.BatchNorm2d(width),
            nn.ReLU(),
        ]
        for _ in range(num_up):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),  # ×2
                nn.BatchNorm2d(width // 2),
                nn.ReLU(),
            ]
            width //= 2
        layers += [nn.Conv2d(width, int(channels), 3, 1, 1), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim)`` or ``(B, latent_dim, 1, 1)`` → ``(B, C, H, W)``."""
        return self.model(z.reshape(z.shape[0], self.latent_dim, 1, 1))


@register_model
class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator returning logits: ``(B, C, S, S)`` → ``([(B, 1)], [[features]])``.

    Stride-2 4×4 convolutions with LeakyReLU(0.2) halve the map down to 2×2, widths doubling from
    ``base_channels``; a 2×2 convolution gives one logit. No BatchNorm: R1, R2 and WGAN-GP
    penalise per-sample input gradients, which batch statistics would couple across the batch
    (Gulrajani et al. 2017, §4); use ``spectral_norm`` (Miyato et al. 2018) to regularise instead.

    Args:
        channels: input channels.
        base_channels: width of the first convolution.
        spectral_norm: wrap every convolution in spectral normalisation.
        image_size: input height and width (power of two >= 4; 8 for the digits).
    """

    def __init__(
        self,
        channels: int = 1,
        base_channels: int = 64,
        spectral_norm: bool = False,
        image_size: int = 8,
    ) -> None:
        super().__init__()
        image_size = _check_image_size(image_size, "DCGANDiscriminator")
        self.model_config: dict[str, Any] = {
            "channels": int(channels),
            "base_channels": int(base_channels),
            "spectral_norm": bool(spectral_norm),
            "image_size": image_size,
        }
        self.channels = int(channels)
        self.image_size = image_size

        def conv(in_ch: int, out_ch: int, kernel: int, stride: int, padding: int) -> nn.Module:
            layer = nn.Conv2d(in_ch, out_ch, kernel, stride, padding)
            return nn.utils.parametrizations.spectral_norm(layer) if spectral_norm else layer

        blocks: list[nn.Module] = []
        in_ch, out_ch, size = self.channels, int(base_channels), image_size
        while size > 2:
            blocks.append(nn.Sequential(conv(in_ch, out_ch, 4, 2, 1), nn.LeakyReLU(0.2)))
            in_ch, out_ch, size = out_ch, out_ch * 2, size // 2
        self.blocks = nn.ModuleList(blocks)
        self.head = conv(in_ch, 1, 2, 1, 0)  # 2×2 → 1×1

    def forward(self, x: torch.Tensor, **cond: Any) -> DiscriminatorOutput:
        """Classify ``x`` ``(B, C, S, S)``; extra condition keywords are ignored."""
        expected = (self.channels, self.image_size, self.image_size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"DCGANDiscriminator expects inputs (B, *{expected}), got {tuple(x.shape)}"
            )
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        logits = self.head(x).flatten(1)  # (B, 1)
        return [logits], [features]
