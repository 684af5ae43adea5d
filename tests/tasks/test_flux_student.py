"""The few-step student's positions and the states its own Euler samplers reach (rollout)."""

from __future__ import annotations

import pytest
import torch

from advtune.tasks.flow_matching import interpolate
from advtune.tasks.flux_student import rollout, sampler_grid


def test_sampler_grid_lists_every_position_of_every_step_count():
    schedules, index = sampler_grid([1, 2, 4], shift=1.0)
    assert index.tolist() == [0, 0, 1, 0, 1, 2, 3]
    assert schedules[1].tolist() == [1.0, 0.5, 0.0, 0.0, 0.0]  # the 2-step sampler, padded
    assert schedules[3].tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    shifted, _ = sampler_grid([2], shift=3.0)
    assert shifted[0].tolist() == pytest.approx([1.0, 0.75, 0.0])


def test_rollout_is_the_samplers_own_state():
    schedules, index = sampler_grid([1, 2, 4], shift=2.0)
    x0, noise = torch.randn(7, 1, 4, 4), torch.randn(7, 1, 4, 4)
    # A perfect denoiser's velocity on the straight path: the state is the interpolation itself.
    states, levels = rollout(lambda x, t, rows: noise[rows] - x0[rows], noise, schedules, index)
    torch.testing.assert_close(levels, schedules.gather(1, index[:, None]).squeeze(1))
    torch.testing.assert_close(states, interpolate(x0, noise, levels))
    # Any velocity: position (4, 3) is three Euler steps of the 4-step sampler from the noise.
    field = lambda x, t: torch.sin(3 * x) * t.view(-1, 1, 1, 1)  # noqa: E731
    states, _ = rollout(lambda x, t, rows: field(x, t), noise, schedules, index)
    partial = noise[6:]
    for t, t_next in zip(schedules[6, :3], schedules[6, 1:4]):
        partial = partial + (t_next - t) * field(partial, t.expand(1))
    torch.testing.assert_close(states[6:], partial)
    torch.testing.assert_close(states[0], noise[0])  # step 0: the noise itself
