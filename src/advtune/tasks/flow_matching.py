"""Rectified-flow (flow matching) pieces as Flux and SD3 train and sample them.

Esser et al. 2024 ("Scaling Rectified Flow Transformers", SD3) and FLUX.1 interpolate linearly
between data and noise, ``x_t = (1 − t)·x0 + t·ε`` with ``t ∈ [0, 1]`` (``t = 1`` pure noise), and
regress the velocity ``v = dx_t/dt = ε − x0``. From a prediction ``v̂`` the one-step estimate of
the clean latent is ``x̂0 = x_t − t·v̂``, and sampling integrates ``dx/dt = v̂`` from ``t = 1`` to 0.

Training levels ``t`` follow diffusers' ``compute_density_for_timestep_sampling`` (uniform,
``logit_normal`` = ``sigmoid(N(m, s²))``, ``mode`` with scale ``s``: ``1 − u − s·(cos²(πu/2) − 1 + u)``),
then the resolution shift of SD3 / ``FlowMatchEulerDiscreteScheduler``,
``t ← shift·t / (1 + (shift − 1)·t)`` (FLUX.1 training scripts use 3.0 at 1024², 1.0 is identity).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "TIMESTEP_SAMPLING",
    "sample_timesteps",
    "shift_sigmas",
    "interpolate",
    "velocity_target",
    "one_step_estimate",
    "euler_sigmas",
    "euler_sample",
]

TIMESTEP_SAMPLING: tuple[str, ...] = ("uniform", "logit_normal", "mode")


def shift_sigmas(sigmas: Tensor, shift: float = 1.0) -> Tensor:
    """SD3 / Flux time shift ``shift·t / (1 + (shift − 1)·t)``: ``shift > 1`` moves levels towards noise."""
    if shift <= 0:
        raise ValueError(f"timestep shift must be > 0, got {shift}")
    return shift * sigmas / (1.0 + (shift - 1.0) * sigmas)


def sample_timesteps(
    batch_size: int,
    scheme: str = "logit_normal",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    mode_scale: float = 1.29,
    shift: float = 1.0,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Training levels ``t`` ``(B,)`` in (0, 1) drawn by ``scheme`` then shifted (see module docstring)."""
    if scheme == "logit_normal":
        normal = torch.randn(batch_size, device=device, generator=generator)
        u = torch.sigmoid(normal * logit_std + logit_mean)
    elif scheme == "mode":
        u = torch.rand(batch_size, device=device, generator=generator)
        u = 1.0 - u - mode_scale * (torch.cos(math.pi * u / 2.0) ** 2 - 1.0 + u)
    elif scheme == "uniform":
        u = torch.rand(batch_size, device=device, generator=generator)
    else:
        raise ValueError(f"timestep_sampling must be one of {TIMESTEP_SAMPLING}, got {scheme!r}")
    return shift_sigmas(u, shift)


def _per_sample(t: Tensor, like: Tensor) -> Tensor:
    return t.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def interpolate(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """``x_t = (1 − t)·x0 + t·ε`` with ``t`` ``(B,)`` broadcast per sample."""
    level = _per_sample(t, x0)
    return (1.0 - level) * x0 + level * noise


def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
    """The regression target ``v = ε − x0``."""
    return noise - x0


def one_step_estimate(x_t: Tensor, velocity: Tensor, t: Tensor) -> Tensor:
    """``x̂0 = x_t − t·v̂``: exact when ``v̂ = ε − x0``."""
    return x_t - _per_sample(t, x_t) * velocity


def euler_sigmas(num_steps: int, shift: float = 1.0, device=None) -> Tensor:
    """``num_steps + 1`` levels from 1 to 0, evenly spaced then shifted."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    return shift_sigmas(torch.linspace(1.0, 0.0, num_steps + 1, device=device), shift)


@torch.no_grad()
def euler_sample(velocity_fn: Callable[[Tensor, Tensor], Tensor], noise: Tensor, num_steps: int,
                 shift: float = 1.0) -> Tensor:
    """Integrate ``dx/dt = v̂(x, t)`` from ``t = 1`` (``noise``) to 0 with ``num_steps`` Euler steps.

    ``x ← x + (t_next − t)·v̂(x, t)``; with one step this is exactly the one-step estimate ``x̂0``.
    """
    x = noise
    sigmas = euler_sigmas(num_steps, shift, noise.device)
    for t, t_next in zip(sigmas[:-1], sigmas[1:]):
        x = x + (t_next - t) * velocity_fn(x, t.expand(x.shape[0]))
    return x
