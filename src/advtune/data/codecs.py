"""Latent codecs: what turns images into the latents Flux trains on, and back.

* :class:`IdentityCodec`: pixel space is latent space (the built-in digits).
* :class:`AutoencoderKLCodec`: diffusers' ``AutoencoderKL`` (FLUX.1's VAE) with Flux's latent
  normalisation ``z = (mean(q(z|x)) − shift_factor) · scaling_factor``.

Both are re-exported by :mod:`advtune.data.latents`, where they lived first.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = ["IdentityCodec", "AutoencoderKLCodec"]


class IdentityCodec:
    """Pixel space *is* latent space (the built-in digits: 1 channel, values in [-1, 1])."""

    latent_channels = 1
    downsample_factor = 1

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images → the same tensor."""
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` latents → images in [-1, 1] (clamped, as a saved PNG would be)."""
        return latents.clamp(-1.0, 1.0)


class AutoencoderKLCodec:
    """diffusers' ``AutoencoderKL`` loaded from a local directory, with Flux's latent normalisation.

    ``encode``: ``z = (mean(q(z|x)) − shift_factor) · scaling_factor`` (the posterior mean, so the
    cache is deterministic); ``decode`` inverts it. FLUX.1's VAE config has ``scaling_factor=0.3611``
    and ``shift_factor=0.1159``; SD-style VAEs have no shift (0).

    Args:
        local_dir: directory saved with ``save_pretrained`` (or a pipeline snapshot with ``subfolder="vae"``).
        subfolder: sub-directory holding ``config.json``.
        device: where the VAE runs while encoding; ``decode`` moves it to the latents' device first,
            so under DDP each rank decodes on the device Lightning gave it.
        dtype: weight dtype (``"float32"``, ``"bfloat16"``, ``"float16"``).
    """

    def __init__(self, local_dir: str | Path, subfolder: str | None = None, device: str = "cpu",
                 dtype: str = "float32") -> None:
        from diffusers import AutoencoderKL

        from advtune.models.flux import check_pretrained_dir

        model_dir = check_pretrained_dir(local_dir, subfolder, "AutoencoderKL", "AutoencoderKL")
        self.vae = AutoencoderKL.from_pretrained(str(model_dir), local_files_only=True, torch_dtype=getattr(torch, dtype))
        self.vae = self.vae.to(device).eval()
        self.vae.requires_grad_(False)
        self.device = torch.device(device)
        config = self.vae.config
        self.scaling_factor = float(config.scaling_factor)
        self.shift_factor = float(config.shift_factor or 0.0)
        self.latent_channels = int(config.latent_channels)
        self.downsample_factor = 2 ** (len(config.block_out_channels) - 1)
        self.config_json = json.dumps(dict(config), sort_keys=True, default=str)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] → ``(B, C, H / f, W / f)`` normalised latents."""
        posterior = self.vae.encode(images.to(self.device, self.vae.dtype)).latent_dist
        return ((posterior.mode() - self.shift_factor) * self.scaling_factor).float().cpu()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents → ``(B, 3, H, W)`` images in [-1, 1], on CPU."""
        if latents.device != self.device:
            self.vae, self.device = self.vae.to(latents.device), latents.device
        z = latents.to(self.vae.dtype) / self.scaling_factor + self.shift_factor
        return self.vae.decode(z).sample.float().clamp(-1.0, 1.0).cpu()
