"""Flow-matching pieces (Flux / SD3 rectified flow): hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from advtune.tasks.flow_matching import (
    euler_sample,
    euler_sigmas,
    interpolate,
    one_step_estimate,
    sample_timesteps,
    shift_sigmas,
    velocity_target,
)


def test_interpolation_target_and_one_step_estimate_known_values():
    x0, noise = torch.tensor([[2.0, -1.0]]), torch.tensor([[0.0, 1.0]])
    t = torch.tensor([0.25])
    x_t = interpolate(x0, noise, t)
    assert torch.allclose(x_t, torch.tensor([[1.5, -0.5]]))  # 0.75·x0 + 0.25·ε
    v = velocity_target(x0, noise)
    assert torch.allclose(v, torch.tensor([[-2.0, 2.0]]))
    assert torch.allclose(one_step_estimate(x_t, v, t), x0)  # exact velocity recovers x0
    # MSE of a velocity off by (1, −1): the diffusion loss the task reports is 1.0 here.
    assert torch.nn.functional.mse_loss(v + torch.tensor([[1.0, -1.0]]), v).item() == 1.0


def test_shift_and_sampling_schemes_known_values():
    assert shift_sigmas(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)  # 1.5 / (1 + 2·0.5)
    assert torch.equal(shift_sigmas(torch.tensor([0.0, 1.0]), 3.0), torch.tensor([0.0, 1.0]))
    generator = torch.Generator().manual_seed(0)
    t = sample_timesteps(5, "logit_normal", logit_mean=0.5, logit_std=2.0, generator=generator)
    expected = torch.sigmoid(torch.randn(5, generator=torch.Generator().manual_seed(0)) * 2.0 + 0.5)
    assert torch.allclose(t, expected)
    u = torch.rand(4, generator=torch.Generator().manual_seed(1))
    mode = sample_timesteps(4, "mode", mode_scale=1.29, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(mode, 1 - u - 1.29 * (torch.cos(math.pi * u / 2) ** 2 - 1 + u))
    uniform = sample_timesteps(4, "uniform", shift=3.0, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(uniform, 3 * u / (1 + 2 * u))
    with pytest.raises(ValueError, match="timestep_sampling must be one of"):
        sample_timesteps(1, "cosine")


def test_euler_integrates_a_straight_path_exactly():
    assert torch.allclose(euler_sigmas(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    x0, noise = torch.tensor([[3.0, -2.0]]), torch.tensor([[0.5, 0.5]])
    # On the straight path x_t = (1−t)·x0 + t·ε the velocity is the constant ε − x0: Euler is exact.
    for steps in (1, 2, 8):
        out = euler_sample(lambda x, t: noise - x0, noise, steps, shift=2.0)
        assert torch.allclose(out, x0, atol=1e-6)
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        euler_sigmas(0)


def test_sampler_levels_known_values_and_diffusers_scheduler_static_and_dynamic_shift():
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    from advtune.tasks.flow_matching import sampler_levels
    from advtune.tasks.flux_validation import flux_schedule_shift

    assert sampler_levels(2) == [1.0, 0.5] and sampler_levels(4) == [1.0, 0.75, 0.5, 0.25]
    assert sampler_levels(2, 3.0) == pytest.approx([1.0, 0.75])  # 3·0.5 / (1 + 2·0.5)
    assert sampler_levels(1, 3.0) == [1.0]

    def diffusers_levels(scheduler, steps, **kwargs):  # as FluxPipeline calls the scheduler
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), **kwargs)
        assert scheduler.sigmas[-1].item() == 0.0  # the terminal level, not a model call
        return scheduler.sigmas[:-1].tolist()

    static = FlowMatchEulerDiscreteScheduler(shift=3.0)
    for steps in (1, 2, 4, 28):
        assert sampler_levels(steps, 3.0) == pytest.approx(diffusers_levels(static, steps), abs=1e-6)
    flux_dev = {"use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15,
                "base_image_seq_len": 256, "max_image_seq_len": 4096, "shift": 3.0}
    dynamic = FlowMatchEulerDiscreteScheduler(**flux_dev)
    for tokens, second_of_two in ((1024, 0.6525), (4096, 0.7595)):  # 512 px and 1024 px FLUX.1-dev
        shift = flux_schedule_shift(flux_dev, tokens)
        assert sampler_levels(2, shift)[1] == pytest.approx(second_of_two, abs=1e-4)
        mu = calculate_shift(tokens, 256, 4096, 0.5, 1.15)
        for steps in (2, 4, 28):
            assert sampler_levels(steps, shift) == pytest.approx(diffusers_levels(dynamic, steps, mu=mu), abs=1e-6)
