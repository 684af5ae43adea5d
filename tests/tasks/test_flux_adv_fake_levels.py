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
