"""Rectified-flow (flow matching) pieces as Flux and SD3 train and sample them.

Esser et al. 2024 ("Scaling Rectified Flow Transformers", SD3) and FLUX.1 interpolate linearly
between data and noise, ``x_t = (1 − t)·x0 + t·ε`` with ``t ∈ [0, 1]`` (``t = 1`` pure noise), and
regress the velocity ``v = dx_t/dt = ε − x0``. From a prediction ``v̂`` the one-step estimate of
the clean latent is ``x̂0 = x_t − t·v̂``, and sampling integrates ``dx/dt = v̂`` from ``t = 1`` to 0.

What matches diffusers, exactly:

* the density of the training level ``u``: diffusers' ``compute_density_for_timestep_sampling``
  (``uniform``, ``logit_normal`` = ``sigmoid(N(m, s²))``, ``mode`` with scale ``s``:
  ``1 − u − s·(cos²(πu/2) − 1 + u)``);
* the sampling levels: :func:`euler_sigmas` are ``FluxPipeline``'s ``linspace(1, 1/n, n)`` shifted
  by ``FlowMatchEulerDiscreteScheduler`` (static ``shift`` or, with ``use_dynamic_shifting``,
  ``exp(μ)``), plus the terminal 0; :func:`sampler_levels` are the ``n`` levels the model is
  called at (tested against the scheduler in ``tests/tasks/test_flow_matching.py``).

What differs from diffusers' Flux LoRA script (``train_dreambooth_lora_flux.py``): it maps ``u`` to
one of 1,000 discrete timesteps and reads the level from the training scheduler's sigmas (shifted
by the config's static ``shift``, unshifted under dynamic shifting); here ``u`` is the level ``t``
itself, continuous, shifted by ``timestep_shift`` with SD3's ``t ← shift·t / (1 + (shift − 1)·t)``
(LoRA trainers use about 3.0 for FLUX.1 at 1024², 1.0 is identity). Target (``ε − x0``) and loss
(plain MSE, the script's default ``weighting_scheme="none"``) are the same.
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
    "sampler_levels",
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


def sampler_levels(num_steps: int, shift: float = 1.0) -> list[float]:
    """The ``num_steps`` levels ``t`` a ``num_steps``-step Euler sampler calls the model at, highest first.

    ``shift_sigmas(linspace(1, 1/n, n))``: ``FlowMatchEulerDiscreteScheduler.sigmas[:-1]`` after
    ``set_timesteps(sigmas=linspace(1, 1/n, n))`` as ``FluxPipeline`` calls it (with ``mu = log(shift)``
    under dynamic shifting). At shift 1, 2 steps visit ``[1.0, 0.5]``; at FLUX.1-dev's 512 px shift
    (``exp(0.63)``) ``[1.0, 0.652]``, at 1024 px (``exp(1.15)``) ``[1.0, 0.760]``.
    """
    return [float(level) for level in euler_sigmas(num_steps, shift)[:-1]]


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
