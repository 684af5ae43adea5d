"""A small noise-conditioned CNN discriminator on unpacked latents ``(B, C, H, W)``.

Latent adversarial training of diffusion models (LADD, Sauer et al. 2024, "Fast High-Resolution
Image Synthesis with Latent Adversarial Diffusion Distillation") shows the discriminator real and
fake latents *re-noised* to a level ``σ`` drawn towards high noise, ``x_σ = (1 − σ)·x + σ·ε`` (the
rectified-flow interpolation Flux trains on), and tells it ``σ``. Re-noising blurs the fine detail
that lets a discriminator win at once, and the level acts as a curriculum over scales.

The helpers :func:`sample_renoise_sigma`, :func:`renoise` and :func:`sigma_embedding` are shared
with :class:`~advtune.discriminators.flux.FluxTransformer2DDiscriminator`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from advtune.discriminators.base import DiscriminatorOutput

__all__ = ["LatentDiscriminator", "sample_renoise_sigma", "renoise", "sigma_embedding", "batch_sigma"]


def sample_renoise_sigma(
    batch_size: int, logit_mean: float = 1.0, logit_std: float = 1.0, device=None, generator=None
) -> Tensor:
    """Levels ``σ = sigmoid(n)``, ``n ~ N(logit_mean, logit_std²)``, ``(B,)``: logit-normal (SD3, Esser et al.
    2024); ``logit_mean > 0`` shifts the mass towards high noise as LADD's ``π(t; m=1, s=1)``."""
    normal = torch.randn(batch_size, device=device, generator=generator)
    return torch.sigmoid(normal * float(logit_std) + float(logit_mean))


def batch_sigma(sigma: Tensor | float, x: Tensor) -> Tensor:
    """``sigma`` as a float ``(B,)`` tensor on ``x``'s device (a scalar is broadcast to the batch)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
    if sigma.numel() == 1:
        return sigma.reshape(1).expand(x.shape[0])
    if sigma.numel() != x.shape[0]:
        raise ValueError(f"sigma has {sigma.numel()} values for a batch of {x.shape[0]}")
    return sigma.reshape(x.shape[0])


def renoise(x: Tensor, sigma: Tensor, noise: Tensor | None = None) -> Tensor:
    """``x_σ = (1 − σ)·x + σ·ε`` per sample (``σ`` ``(B,)``); differentiable in ``x``."""
    noise = torch.randn_like(x) if noise is None else noise
    level = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return (1.0 - level) * x + level * noise


def sigma_embedding(sigma: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``(B, dim)`` of ``1000·σ`` (the transformer-timestep embedding of DDPM / Flux)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=sigma.device) / half)
    angles = 1000.0 * sigma.float().reshape(-1, 1) * frequencies.reshape(1, -1)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class _FiLM(nn.Module):
    """``h · (1 + γ(e)) + β(e)`` (Perez et al. 2018); zero-initialised, so it starts as the identity."""

    def __init__(self, embedding_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(embedding_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: Tensor, embedding: Tensor) -> Tensor:
        scale, shift = self.proj(embedding).chunk(2, dim=1)
        return h * (1.0 + scale[:, :, None, None]) + shift[:, :, None, None]


class LatentDiscriminator(nn.Module):
    """Patch discriminator on latents, conditioned on the re-noising level by FiLM.

    ``conv3×3(C→ch) → LReLU``, then ``num_layers`` × ``conv4×4 stride 2 → FiLM(σ) → LReLU`` (channels
    doubling, capped at ``8·ch``), then ``conv3×3 → 1`` logit per patch. An ``H × W`` latent gives
    ``(B, 1, H / 2^L, W / 2^L)`` logits.

    Initialisation (documented, as the brief asks): convolutions Kaiming-normal for LeakyReLU(0.2)
    (He et al. 2015) with zero bias, so activations keep their scale through the stack; FiLM
    projections zero (conditioning starts neutral); the output conv ``N(0, 0.02²)`` (DCGAN), so the
    first logits are near 0 and no player starts saturated.

    Args:
        in_channels: latent channels ``C``.
        base_channels: channels of the first conv.
        num_layers: stride-2 convs; needs ``H, W >= 2^num_layers``.
        embedding_dim: width of the sinusoidal ``σ`` embedding.
        spectral_norm: spectral normalization on every conv (Miyato et al. 2018).
        renoise: re-noise inputs to ``σ`` before scoring (LADD). Off: inputs are scored as given and
            ``σ`` (when passed) is only a condition.
        sigma_logit_mean: logit-normal mean of the level drawn when ``sigma`` is not passed.
        sigma_logit_std: its standard deviation.

    Forward:
        ``x`` ``(B, C, H, W)``, optional ``sigma`` ``(B,)``, ``prepared`` (``x`` comes from
        :meth:`prepare_input`: already re-noised); other cond keys are ignored →
        ``([logits (B, 1, h, w)], [[activation after each stride-2 block]])``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 32,
        num_layers: int = 2,
        embedding_dim: int = 64,
        spectral_norm: bool = False,
        renoise: bool = True,
        sigma_logit_mean: float = 1.0,
        sigma_logit_std: float = 1.0,
    ) -> None:
        super().__init__()
        if in_channels < 1 or base_channels < 1 or num_layers < 1 or embedding_dim < 2 or embedding_dim % 2:
            raise ValueError(
                "LatentDiscriminator: in_channels, base_channels, num_layers >= 1 and even embedding_dim >= 2 "
                f"required, got {in_channels}, {base_channels}, {num_layers}, {embedding_dim}"
            )
        self.num_layers = int(num_layers)
        self.embedding_dim = int(embedding_dim)
        self.renoise = bool(renoise)
        self.sigma_logit_mean = float(sigma_logit_mean)
        self.sigma_logit_std = float(sigma_logit_std)
        wrap = apply_spectral_norm if spectral_norm else (lambda module: module)
        channels = [base_channels * min(2**i, 8) for i in range(num_layers + 1)]
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.downs = nn.ModuleList(
            nn.Conv2d(channels[i], channels[i + 1], 4, stride=2, padding=1) for i in range(num_layers)
        )
        self.films = nn.ModuleList(_FiLM(embedding_dim, channels[i + 1]) for i in range(num_layers))
        self.out = nn.Conv2d(channels[-1], 1, 3, padding=1)
        self.activation = nn.LeakyReLU(0.2)
        self._init_weights()
        self.stem, self.out = wrap(self.stem), wrap(self.out)
        self.downs = nn.ModuleList(wrap(conv) for conv in self.downs)

    def _init_weights(self) -> None:
        for conv in [self.stem, *self.downs]:
            nn.init.kaiming_normal_(conv.weight, a=0.2, nonlinearity="leaky_relu")
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.out.weight, 0.0, 0.02)
        nn.init.zeros_(self.out.bias)

    def prepare_input(self, x: Tensor, sigma: Tensor | float | None = None, **cond) -> tuple[Tensor, dict]:
        """``(x_σ, cond)``: ``x`` re-noised to ``σ`` (drawn when not given); ``forward(x_σ, **cond)`` scores it as is.

        R1/R2 differentiate at ``x_σ``, the input the network sees: the penalty of Mescheder et al.
        is on the gradient of D at its input distribution, here the re-noised data. Taken at the
        clean latent instead it would carry a ``(1 − σ)²`` factor, so ``γ`` would mean less and
        less as ``σ → 1``, where LADD's level distribution puts most of its mass.
        """
        if sigma is None:
            sigma = (
                sample_renoise_sigma(x.shape[0], self.sigma_logit_mean, self.sigma_logit_std, x.device)
                if self.renoise else torch.zeros(x.shape[0], device=x.device)
            )
        sigma = batch_sigma(sigma, x)
        return (renoise(x, sigma) if self.renoise else x), {**cond, "sigma": sigma, "prepared": True}

    def forward(self, x: Tensor, sigma: Tensor | None = None, prepared: bool = False, **cond) -> DiscriminatorOutput:
        if x.ndim != 4 or min(x.shape[2:]) < 2**self.num_layers:
            raise ValueError(
                f"LatentDiscriminator: expected (B, C, H, W) latents with H, W >= {2**self.num_layers}, "
                f"got {tuple(x.shape)}"
            )
        if not prepared:
            x, cond = self.prepare_input(x, sigma)
            sigma = cond["sigma"]
        sigma = batch_sigma(sigma, x)
        embedding = sigma_embedding(sigma, self.embedding_dim).to(x.dtype)
        h = self.activation(self.stem(x))
        features = []
        for down, film in zip(self.downs, self.films):
            h = self.activation(film(down(h), embedding))
            features.append(h)
        return [self.out(h)], [features]
