"""FluxLoRATask: flow-matching contract, what one iteration trains, stages, sampling, export, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from advtune.adversarial import AdversarialLossCalculator
from advtune.discriminators.flux import FluxTransformer2DDiscriminator
from advtune.discriminators.latent import LatentDiscriminator
from advtune.models.flux import build_flux_transformer, load_flux_transformer, null_prompt, predict_velocity
from advtune.tasks.flow_matching import interpolate, sample_timesteps
from advtune.tasks.flux_lora import FluxLoRATask

BATCH = {"latents": torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1}


def _task(**kwargs):
    kwargs.setdefault("rank", 2)
    kwargs.setdefault("num_validation_samples", 16)
    return FluxLoRATask(**kwargs)


def _discriminator(kind, task):
    torch.manual_seed(0)
    if kind == "latent":
        return LatentDiscriminator(base_channels=8, embedding_dim=16)
    return FluxTransformer2DDiscriminator(**task.discriminator_kwargs(), head_dim=8, embedding_dim=8)


def _snapshot(params):
    return [p.detach().clone() for p in params]


def test_generator_predict_is_flux_flow_matching():
    task = _task(diffusion_loss_weight=0.5, timestep_shift=2.0)
    torch.manual_seed(0)
    out = task.generator_predict(BATCH)
    torch.manual_seed(0)  # replay the same draws by hand: t, then ε
    x0 = BATCH["latents"]
    t = sample_timesteps(4, "logit_normal", shift=2.0)
    noise = torch.randn_like(x0)
    x_t = interpolate(x0, noise, t)
    velocity = predict_velocity(task.transformer, x_t, t, *null_prompt(task.transformer, 4))
    mse = F.mse_loss(velocity, noise - x0)
    assert torch.equal(out.real, x0) and out.fake.shape == x0.shape and out.fake.requires_grad
    assert torch.allclose(out.fake, x_t - t.view(-1, 1, 1, 1) * velocity, atol=1e-6)
    assert set(out.base_losses) == {"diffusion"}
    assert torch.allclose(out.base_losses["diffusion"], 0.5 * mse) and torch.allclose(out.logs["g/diffusion_mse"], mse)
    assert out.cond["sigma"].shape == (4,) and out.last_layer is not None and out.last_layer.requires_grad


@pytest.mark.parametrize("kind,adapter_type", [("latent", "lora"), ("flux", "lora"), ("flux", "lokr")])
def test_one_iteration_changes_only_adapters_then_only_discriminator(kind, adapter_type):
    task = _task(adapter_type=adapter_type)
    disc = _discriminator(kind, task)
    calculator = AdversarialLossCalculator(loss_type="hinge", feature_matching_weight=1.0)
    base = [p for p in task.transformer.parameters() if not p.requires_grad]
    adapters = list(task.trainable_parameters())
    base_before, adapters_before, disc_before = _snapshot(base), _snapshot(adapters), _snapshot(disc.parameters())
    g_opt = torch.optim.Adam(adapters, lr=1e-2)
    d_opt = torch.optim.Adam(disc.parameters(), lr=1e-2)

    out = task.generator_predict(BATCH)
    result = calculator.compute_generator_loss(disc, out.real, out.fake, 0, base_loss=out.base_loss, **out.cond)
    assert result["g/adv"] != 0
    result["loss"].backward()
    g_opt.step()
    assert all(torch.equal(a, b) for a, b in zip(base, base_before))  # bit-identical base
    # Factors multiplied by a zero-initialised one get no gradient on the first step (B = 0 in LoRA).
    moved = [not torch.equal(a, b) for a, b in zip(adapters, adapters_before)]
    assert any(moved) and all(m for m, p in zip(moved, adapters) if p.grad.abs().sum() > 0)
    assert all(torch.equal(a, b) for a, b in zip(disc.parameters(), disc_before))  # D not stepped

    g_opt.zero_grad(set_to_none=True)
    adapters_after_g = _snapshot(adapters)
    d_result = calculator.compute_discriminator_loss(disc, out.real.detach(), out.fake.detach(), 0, **out.cond)
    d_result["loss"].backward()
    d_opt.step()
    assert all(p.grad is None for p in adapters)
    assert all(torch.equal(a, b) for a, b in zip(base, base_before))
    assert all(torch.equal(a, b) for a, b in zip(adapters, adapters_after_g))
    assert any(not torch.equal(a, b) for a, b in zip(disc.parameters(), disc_before))


@pytest.mark.parametrize("pure_adversarial", [False, True])
def test_domain_adaptation_then_adversarial_stage_under_the_module(trainer_factory, tmp_path, pure_adversarial):
    from advtune.schedule import PhaseSchedule
    from advtune.training.module import AdversarialModule
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    task = _task()
    disc = _discriminator("flux", task)
    base_before, disc_before = _snapshot(p for p in task.transformer.parameters() if not p.requires_grad), _snapshot(disc.parameters())
    schedule = PhaseSchedule(adversarial_start_step=2, pure_adversarial=pure_adversarial)
    module = AdversarialModule(task, disc, AdversarialLossCalculator(), schedule,
                               generator_optimizer=lambda p: torch.optim.Adam(p, 1e-3),
                               discriminator_optimizer=lambda p: torch.optim.Adam(p, 1e-3), sample_dir=tmp_path)
    data = [{"latents": BATCH["latents"][i]} for i in range(4)]
    trainer = trainer_factory(max_steps=4, limit_val_batches=0, log_every_n_steps=1)
    trainer.fit(module, DataLoader(data, batch_size=2))
    assert all(torch.equal(a, b) for a, b in zip((p for p in task.transformer.parameters() if not p.requires_grad), base_before))
    assert any(not torch.equal(a, b) for a, b in zip(disc.parameters(), disc_before))
    logged = trainer.logged_metrics
    assert "d/loss" in logged and "g/adv" in logged and "g/diffusion_mse" in logged
    assert float(logged["g/base_weight"]) == (0.0 if pure_adversarial else 1.0)


def test_sampling_and_validation_write_grids_and_fd(tmp_path):
    task = _task(validation_num_steps=(1, 2))
    torch.manual_seed(0)
    assert task.sample(3, num_steps=1).shape == (3, 1, 8, 8)
    metrics = task.validation_step(BATCH)
    assert set(metrics) == {"val/diffusion_mse"} and metrics["val/diffusion_mse"] > 0
    results = task.validation_epoch_end(tmp_path, step=7)
    assert set(results) == {"val/fd_1step", "val/fd_2step"} and all(v > 0 for v in results.values())
    assert [p.name for p in tmp_path.iterdir()] == ["euler_steps_0000007.png"]
    again = task.validation_step(BATCH), task.validation_epoch_end(None, step=8)
    assert again[1] == results  # fixed validation noise: same model, same numbers


def test_checkpoint_state_holds_adapters_only_and_round_trips():
    task = _task()
    with torch.no_grad():
        for p in task.trainable_parameters():
            p.normal_(0, 0.1)
    state = task.state_dict()
    assert state and all(".lora_" in k for k in state)
    fresh = _task()
    fresh.load_state_dict(state)  # strict: the missing frozen base is expected
    torch.manual_seed(1)
    expected = task.sample(2, num_steps=2)
    torch.manual_seed(1)
    assert torch.equal(fresh.sample(2, num_steps=2), expected)
    assert len(_task(checkpoint_base_weights=True).state_dict()) > len(state)


def test_export_lora_and_full_model(tmp_path):
    from advtune.adapters import LORA_WEIGHTS_NAME

    task = _task()
    assert task.export(tmp_path / "lora") == tmp_path / "lora" / LORA_WEIGHTS_NAME
    full = _task(adapter_type="none")
    path = full.export(tmp_path / "full")
    assert path.is_file()
    reloaded = load_flux_transformer(tmp_path / "full")
    assert all(torch.equal(a, b) for a, b in zip(reloaded.parameters(), full.transformer.parameters()))
    loaded_task = _task(pretrained_path=str(tmp_path / "full"))
    assert loaded_task.transformer.config.in_channels == 4


def test_prompt_embeddings_from_the_batch_condition_generator_and_discriminator():
    task = _task(transformer_config={"joint_attention_dim": 8, "pooled_projection_dim": 8, "seed": 0})
    embeds = {"prompt_embeds": torch.randn(4, 3, 8), "pooled_prompt_embeds": torch.randn(4, 8)}
    out = task.generator_predict({**BATCH, **embeds})
    assert torch.equal(out.cond["prompt_embeds"], embeds["prompt_embeds"])
    disc = _discriminator("flux", task)
    logits = disc(out.fake.detach(), **out.cond)[0]
    null = disc(out.fake.detach(), sigma=out.cond["sigma"])[0]
    assert logits[0].shape == null[0].shape == (4, 1, 4, 4)


def test_bad_inputs_fail_before_training(tmp_path):
    with pytest.raises(ValueError, match="2-channel latents do not fit"):
        _task(latent_channels=2)
    with pytest.raises(FileNotFoundError, match="directory not found"):
        _task(pretrained_path=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="either transformer or pretrained_path"):
        _task(transformer=build_flux_transformer(), pretrained_path=str(tmp_path))
    with pytest.raises(ValueError, match="timestep_sampling must be one of"):
        _task(timestep_sampling="cosine")
    with pytest.raises(ValueError, match="full fine-tuning .* cannot train it"):
        _task(quantize="int8", adapter_type="none")
    task = _task()
    with pytest.raises(ValueError, match="'latents'"):
        task.generator_predict({"image": BATCH["latents"]})
    with pytest.raises(ValueError, match="must be even"):
        task.generator_predict({"latents": torch.zeros(2, 1, 7, 7)})


def test_interrupted_flux_run_resumes_to_identical_adapters_and_heads(tmp_path):
    from advtune.config import compose_config
    from advtune.runner import train
    from advtune.training.checkpoint_io import load_checkpoint_file

    def overrides(out, steps, **extra):
        items = {"experiment": "flux_lora_latent_adv", "discriminator": "flux_features", "output_dir": out,
                 "trainer.max_steps": steps, "latent_adv_start_step": 2, "disc_warmup_steps": 1,
                 "checkpoint_every": 3, "trainer.val_check_interval": 1000, "data.batch_size": 16,
                 "task.transformer_config.num_layers": 1, "task.transformer_config.num_single_layers": 1,
                 "trainer.enable_progress_bar": "false", **extra}
        return compose_config([f"{k}={v}" for k, v in items.items()])

    train(overrides(tmp_path / "full", 6))
    train(overrides(tmp_path / "cut", 3))
    train(overrides(tmp_path / "cut", 6, ckpt_path=tmp_path / "cut" / "checkpoints" / "last.ckpt"))
    full = load_checkpoint_file(tmp_path / "full" / "checkpoints" / "last.ckpt")
    cut = load_checkpoint_file(tmp_path / "cut" / "checkpoints" / "last.ckpt")
    assert any(".lora_" in k for k in full["state_dict"]) and any(k.startswith("discriminator.heads") for k in full["state_dict"])
    assert not any("base_layer" in k for k in full["state_dict"])  # the frozen base is not checkpointed
    for key, value in full["state_dict"].items():
        torch.testing.assert_close(cut["state_dict"][key], value, rtol=0, atol=0, msg=key)
