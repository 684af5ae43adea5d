"""Where a few-step student is trained: the states its own Euler samplers pass through.

A ``k``-step Euler sampler calls the model at step ``i`` (``0 <= i < k``) on the level
``t_i = shift(1 − i/k)`` (:func:`~advtune.tasks.flow_matching.sampler_levels`). The state it holds there
is, from noise ``ε`` and with ``x̂0_j`` the estimates of its earlier steps, the Euler update
``x ← x + (t_{j+1} − t_j)·v̂_j``. :func:`sampler_grid` lists every position ``(k, i)`` of the trained
step counts; :func:`rollout` runs each sample's own sampler (no gradient) up to its position, so the
student learns from the very states it will see when it samples (as DMD2's backward simulation,
Yin et al. 2024), not from a teacher sample noised again.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from advtune.tasks.flow_matching import euler_sigmas

__all__ = ["sampler_grid", "rollout"]


def sampler_grid(student_steps: Sequence[int], shift: float, device=None) -> tuple[Tensor, Tensor]:
    """Schedules ``(P, K + 1)`` (each ``k``-step sampler's levels, padded with zeros to the largest ``K``)
    and the step index ``(P,)`` of every position ``(k, i)``, ``i < k``, over ``student_steps``."""
    largest = max(int(k) for k in student_steps)
    rows, index = [], []
    for k in student_steps:
        levels = euler_sigmas(int(k), shift)
        padded = torch.cat([levels, levels.new_zeros(largest - int(k))])
        rows += [padded] * int(k)
        index += list(range(int(k)))
    return torch.stack(rows).to(device), torch.tensor(index, device=device)


@torch.no_grad()
def rollout(velocity: Callable[[Tensor, Tensor, Tensor], Tensor], noise: Tensor, schedules: Tensor,
            index: Tensor) -> tuple[Tensor, Tensor]:
    """Each sample's sampler state and level at its step: ``(x_t (B, C, H, W), t (B,))``.

    Args:
        velocity: ``velocity(x, t, rows) -> v̂`` for the batch rows ``rows`` (their prompts).
        noise: ``ε`` ``(B, C, H, W)``, where every sampler starts (``t = 1``).
        schedules: ``(B, K + 1)`` levels of each sample's sampler; ``index``: ``(B,)`` its step.
    """
    x = noise.clone()
    for step in range(int(index.max()) if len(index) else 0):
        rows = (index > step).nonzero().squeeze(1)
        t, t_next = schedules[rows, step], schedules[rows, step + 1]
        x[rows] = x[rows] + (t_next - t).view(-1, *[1] * (x.ndim - 1)) * velocity(x[rows], t, rows)
    return x, schedules.gather(1, index[:, None]).squeeze(1)
