"""FluxLoRATask(adv_fake_levels=...): the adversarial fake made at chosen levels (a second forward)."""

from __future__ import annotations

import pytest
import torch

from advtune.tasks.flux_lora import FluxLoRATask


def _predict(task: FluxLoRATask, latents: torch.Tensor):
    torch.manual_seed(0)
    return task.generator_predict({"latents": latents})


def test_fake_at_level_one_is_the_one_step_sample_whatever_the_data():
    torch.manual_seed(0)
    task = FluxLoRATask(rank=2, adv_fake_levels=[1.0])
    first = torch.rand(4, 1, 8, 8) * 2 - 1
    second = -first  # other data, same random draws
    out_a, out_b = _predict(task, first), _predict(task, second)
    # At t = 1 the input is pure noise: x̂0 = ε − v̂(ε, 1), Euler's one-step sample, the data has no say.
    torch.testing.assert_close(out_a.fake, out_b.fake)
    assert not torch.allclose(out_a.base_losses["diffusion"], out_b.base_losses["diffusion"])
    out_a.fake.sum().backward()  # the fake is on the graph of the adapters
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.trainable_parameters())


def test_default_fake_depends_on_the_data_and_levels_are_checked():
    torch.manual_seed(0)
    task = FluxLoRATask(rank=2)
    latents = torch.rand(4, 1, 8, 8) * 2 - 1
    assert not torch.allclose(_predict(task, latents).fake, _predict(task, -latents).fake)
    for bad in ([0.0], [1.5]):
        with pytest.raises(ValueError, match="adv_fake_levels must lie in"):
            FluxLoRATask(rank=2, adv_fake_levels=bad)


def test_adv_fake_steps_are_the_samplers_levels_with_its_shift():
    torch.manual_seed(0)
    by_steps = FluxLoRATask(rank=2, adv_fake_steps=[2])
    torch.manual_seed(0)
    by_levels = FluxLoRATask(rank=2, adv_fake_levels=[1.0, 0.5])
    assert by_steps.fake_levels(8, 8) == [1.0, 0.5]  # shift 1: what adv_fake_levels=[1.0, 0.5] meant
    latents = torch.rand(4, 1, 8, 8) * 2 - 1
    torch.testing.assert_close(_predict(by_steps, latents).fake, _predict(by_levels, latents).fake, rtol=0, atol=0)
    shifted = FluxLoRATask(rank=2, adv_fake_steps=[2, 4], sample_shift=3.0)
    assert shifted.fake_levels(8, 8) == pytest.approx([1.0, 0.9, 0.75, 0.5])  # 3t / (1 + 2t) at 1, .75, .5, .25
    with pytest.raises(ValueError, match="not both"):
        FluxLoRATask(rank=2, adv_fake_steps=[2], adv_fake_levels=[1.0])
    with pytest.raises(ValueError, match="adv_fake_steps must be step counts"):
        FluxLoRATask(rank=2, adv_fake_steps=[0])
