"""FluxDistillTask: the teacher is the bare base (or base + teacher LoRA), the student's inputs and losses."""

from __future__ import annotations

import pytest
import torch

from advtune.models.flux import build_flux_transformer
from advtune.tasks.flow_matching import euler_sample, interpolate
from advtune.tasks.flux_distill import FluxDistillTask
from advtune.tasks.flux_lora import FluxLoRATask

TINY = dict(in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
            joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 6, 6], seed=0)


def _perturb(task, scale: float = 0.1, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in task.trainable_parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)


def _bare_base_samples(noise: torch.Tensor, steps: int) -> torch.Tensor:
    from advtune.models.flux import null_prompt, predict_velocity

    base = build_flux_transformer(**TINY)  # the same seeded config, never given adapters
    prompt = null_prompt(base, noise.shape[0])
    return euler_sample(lambda x, t: predict_velocity(base, x, t, *prompt), noise, steps)


def test_teacher_is_the_bare_base_and_the_student_is_not():
    task = FluxDistillTask(transformer_config=TINY, teacher_steps=4, rank=2)
    _perturb(task)  # a trained student
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    teacher = task.teacher_generate(noise)
    torch.testing.assert_close(teacher, _bare_base_samples(noise, 4), rtol=0, atol=0)
    student = euler_sample(lambda x, t: task._velocity(x, t, task._prompt({}, 3, "cpu")), noise, 4)
    assert (student - teacher).abs().max() > 1e-3  # the adapters are back on outside teacher_mode
    assert all(p.requires_grad for p in task.trainable_parameters())  # flags restored


def test_teacher_lora_is_base_plus_file_and_the_student_starts_as_its_copy(tmp_path):
    torch.manual_seed(0)
    fm = FluxLoRATask(transformer_config=TINY, rank=2, alpha=4.0)
    _perturb(fm)
    lora = fm.export(tmp_path / "fm")
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = euler_sample(lambda x, t: fm._velocity(x, t, fm._prompt({}, 3, "cpu")), noise, 4)

    task = FluxDistillTask(transformer_config=TINY, teacher_lora=str(lora), teacher_steps=4, rank=6)
    # Widened to rank 6 at the teacher's scale alpha / rank = 2: B = [B_t, 0] keeps B A = B_t A_t.
    assert [p.numel() for p in task.trainable_parameters()] == [3 * p.numel() for p in fm.trainable_parameters()]
    assert task.transformer.peft_config["default"].lora_alpha == 12.0
    torch.testing.assert_close(task.teacher_generate(noise), expected, rtol=1e-5, atol=1e-6)
    student = euler_sample(lambda x, t: task._velocity(x, t, task._prompt({}, 3, "cpu")), noise, 4)
    torch.testing.assert_close(student, expected, rtol=1e-5, atol=1e-6)  # the copy, before training
    _perturb(task, seed=2)
    torch.testing.assert_close(task.teacher_generate(noise), expected, rtol=1e-5, atol=1e-6)  # the teacher is frozen
    assert not any(".teacher." in name for name, _ in task.transformer.named_parameters()
                   if any(p is _ for p in task.trainable_parameters()))
    from safetensors.torch import load_file

    shipped = load_file(str(task.export(tmp_path / "student")))
    assert shipped and not any("teacher" in key for key in shipped)  # the student stands alone on the base
    assert sorted(shipped) == sorted(load_file(str(lora)))
    narrow = FluxDistillTask(transformer_config=TINY, teacher_lora=str(lora), rank=1)  # never below the teacher's
    assert narrow.transformer.peft_config["default"].r == 2


def test_student_inputs_sit_on_its_samplers_levels_and_the_regression_is_known():
    task = FluxDistillTask(transformer_config=TINY, rank=2, student_steps=[1, 2, 4], regression_weight=0.5,
                           student_input="paired")
    assert task.student_levels(8, 8) == [1.0, 0.75, 0.5, 0.25]
    assert FluxDistillTask(transformer_config=TINY, rank=2, student_steps=[2], sample_shift=3.0).student_levels(8, 8) == \
        pytest.approx([1.0, 0.75])
    x0, noise = torch.rand(8, 1, 8, 8) * 2 - 1, torch.randn(8, 1, 8, 8)
    torch.manual_seed(0)
    out = task.generator_predict({"latents": x0, "noise": noise})
    torch.manual_seed(0)
    t = torch.tensor([1.0, 0.75, 0.5, 0.25])[torch.randint(4, (8,))]
    x_t = interpolate(x0, noise, t)  # paired: the sample's own noise
    velocity = task._velocity(x_t, t, task._prompt({}, 8, "cpu"))
    fake = x_t - t.view(-1, 1, 1, 1) * velocity
    torch.testing.assert_close(out.fake, fake)
    torch.testing.assert_close(out.real, x0)
    torch.testing.assert_close(out.base_losses["distill"], 0.5 * ((fake - x0) ** 2).mean())
    out.base_losses["distill"].backward()
    assert all(p.grad is not None for p in task.trainable_parameters())


def test_rollout_inputs_are_the_students_own_sampler_states():
    x0, noise = torch.rand(6, 1, 8, 8) * 2 - 1, torch.randn(6, 1, 8, 8)
    paired = FluxDistillTask(transformer_config=TINY, rank=2, student_steps=[1], student_input="paired")
    rolled = FluxDistillTask(transformer_config=TINY, rank=2, student_steps=[1], student_input="rollout")
    torch.manual_seed(0)
    expected = paired.generator_predict({"latents": x0, "noise": noise})
    torch.manual_seed(0)
    out = rolled.generator_predict({"latents": x0, "noise": noise})  # one step: the state is the noise
    torch.testing.assert_close(out.fake, expected.fake)
    task = FluxDistillTask(transformer_config=TINY, rank=2, student_steps=[2], student_input="rollout")
    _perturb(task)
    torch.manual_seed(1)
    out = task.generator_predict({"latents": x0, "noise": noise})
    prompt = task._prompt({}, 6, "cpu")
    torch.manual_seed(1)
    second = torch.randint(2, (6,)) == 1
    with torch.no_grad():  # the 2-step sampler's state at t = 0.5: half an Euler step from the noise
        state = noise - 0.5 * task._velocity(noise, torch.ones(6), prompt)
        estimate = state - 0.5 * task._velocity(state, torch.full((6,), 0.5), prompt)
    torch.testing.assert_close(out.fake[second].detach(), estimate[second])
    out.base_losses["distill"].backward()


def test_real_mix_and_adversarial_only_settings():
    x0, noise, data = torch.zeros(16, 1, 8, 8), torch.randn(16, 1, 8, 8), torch.ones(16, 1, 8, 8)
    task = FluxDistillTask(transformer_config=TINY, rank=2, real_mix=1.0, regression_weight=0.0, student_input="fresh")
    out = task.generator_predict({"latents": x0, "noise": noise, "real_latents": data})
    assert out.base_losses == {} and torch.equal(out.real, data)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"student_input": "mixed"}, "student_input must be one of"),
    ({"student_input": "fresh", "regression_weight": 1.0}, "needs student_input=paired"),
    ({"adapter_type": "none"}, "must be an adapter"),
    ({"adapter_type": "lokr", "teacher_lora": "x.safetensors"}, "teacher_lora needs adapter_type=lora"),
    ({"student_steps": [0]}, "step counts >= 1"),
    ({"real_mix": 1.5}, "real_mix must lie in"),
    ({"teacher_lora": "/nonexistent/lora.safetensors"}, "no LoRA file at"),
])
def test_bad_settings_are_one_line_errors(kwargs, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        FluxDistillTask(transformer_config=TINY, rank=2, **kwargs)


def test_export_metadata_and_validation_columns(tmp_path):
    from safetensors import safe_open

    task = FluxDistillTask(transformer_config=TINY, rank=2, student_steps=[1, 2], teacher_steps=3,
                           validation_num_steps=[1, 2], num_validation_samples=4, guidance_scale=2.5)
    with safe_open(str(task.export(tmp_path)), "pt") as handle:
        metadata = handle.metadata()
    assert metadata["advtune_recommended_num_steps"] == "2" and metadata["advtune_recommended_guidance_scale"] == "2.5"
    assert metadata["advtune_teacher"] == "base" and "lora_adapter_metadata" in metadata  # diffusers' entry kept
    assert list(task._columns()) == ["teacher, 3 steps", "1 step", "2 steps"]
    references = torch.rand(8, 1, 8, 8) * 2 - 1
    scores = task._render(tmp_path, 0, references)
    assert set(scores) == {"val/fd_teacher_3step", "val/fd_1step", "val/fd_2step"}
    assert (tmp_path / "euler_steps_0000000.png").is_file()
