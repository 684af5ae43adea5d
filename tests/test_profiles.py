"""The FLUX.1 profile: applied with a FLUX.1 snapshot to Flux adapter jobs only, command-line keys win, the
resolution-dependent shift, schnell, the header line, and validation at the inference guidance."""

from __future__ import annotations

import json
import math
import shutil
from types import SimpleNamespace

import pytest
import torch

from advtune.config import ConfigError, compose_config
from advtune.profiles import FLUX1_PROFILE, schedule_shift, snapshot_profile


def _compose(snapshot, folder, *extra):
    return compose_config(["experiment=flux_lora_latent_adv", f"pretrained={snapshot}", "data=image_folder",
                           f"data.image_dir={folder}", *extra])


def test_a_flux1_dev_snapshot_gets_the_profile_and_the_digits_toy_keeps_its_own(tmp_path, tiny_flux_snapshot):
    cfg = _compose(tiny_flux_snapshot, tmp_path)
    assert cfg.profile == "flux1-dev"
    assert (cfg.module.generator_optimizer.lr, cfg.task.rank, cfg.task.alpha) == (1e-4, 16, 16.0)
    assert (cfg.task.guidance_scale, cfg.task.validation_guidance_scale, list(cfg.task.validation_num_steps)) == (1.0, 3.5, [4, 28])
    assert (cfg.task.base_dtype, cfg.task.gradient_checkpointing, cfg.trainer.max_steps) == ("bfloat16", True, 2000)
    assert (cfg.trainer.val_check_interval, cfg.checkpoint_every, cfg.data.max_sequence_length) == (250, 250, 512)
    assert cfg.trainer.accelerator == "auto"  # the GPU when there is one (advtune's own default is cpu)
    assert (cfg.latent_adv_start_step, cfg.adversarial.adversarial_weight, cfg.schedule.discriminator_warmup_steps) == (500, 0.1, 100)
    # FluxPipeline's shift at 512 px (1,024 image tokens) of the snapshot's FLUX.1-dev scheduler: exp(0.5 + 0.65·768/3840)
    assert cfg.task.timestep_shift == pytest.approx(math.exp(0.5 + 0.65 * 768 / 3840), abs=1e-3)
    assert _compose(tiny_flux_snapshot, tmp_path, "data.resolution=1024").task.timestep_shift == pytest.approx(3.158, abs=1e-3)

    toy = compose_config(["experiment=flux_lora_latent_adv"])  # no snapshot: the digits demo as measured
    assert toy.profile is None and (toy.module.generator_optimizer.lr, toy.task.rank, toy.trainer.max_steps) == (1e-3, 8, 600)
    assert compose_config(["experiment=digits_gan"]).profile is None
    base = compose_config(["experiment=flux_base", f"pretrained={tiny_flux_snapshot}"])  # full fine-tuning: no LoRA profile
    assert base.profile is None and base.trainer.max_steps == 2000 and base.module.generator_optimizer.lr == 1e-3


def test_the_distillation_job_takes_the_inference_settings_and_keeps_its_own_rank_and_length(tmp_path, tiny_flux_snapshot):
    cfg = compose_config(["experiment=flux_lora_distill", f"pretrained={tiny_flux_snapshot}", "data@data.source=image_folder",
                          f"data.source.image_dir={tmp_path}"])
    assert cfg.profile == "flux1-dev"
    assert (cfg.task.teacher_steps, cfg.task.validation_guidance_scale, cfg.module.generator_optimizer.lr) == (28, 3.5, 1e-4)
    assert (cfg.task.base_dtype, cfg.task.gradient_checkpointing, cfg.trainer.accelerator) == ("bfloat16", True, "auto")
    # its own: rank 32, 8,000 updates, few-step validation, its adversarial weight and warm-up
    assert (cfg.task.rank, cfg.trainer.max_steps, list(cfg.task.validation_num_steps)) == (32, 8000, [1, 2, 4])
    assert (cfg.adversarial.adversarial_weight, cfg.schedule.discriminator_warmup_steps) == (0.5, 50)
    assert compose_config(["experiment=flux_lora_distill"]).task.teacher_steps == 32  # the digits toy


def test_command_line_keys_win_and_profile_none_opts_out(tmp_path, tiny_flux_snapshot):
    cfg = _compose(tiny_flux_snapshot, tmp_path, "task.rank=4", "module.generator_optimizer.lr=3e-4", "trainer.max_steps=10",
                   "task.timestep_shift=1.0", "task.validation_guidance_scale=2.0", "latent_adv_loss_weight=0.5")
    assert (cfg.task.rank, cfg.module.generator_optimizer.lr, cfg.trainer.max_steps) == (4, 3e-4, 10)
    assert (cfg.task.timestep_shift, cfg.task.validation_guidance_scale, cfg.adversarial.adversarial_weight) == (1.0, 2.0, 0.5)
    assert cfg.task.alpha == 16.0 and cfg.profile == "flux1-dev"  # the keys not given still come from the profile
    parent = _compose(tiny_flux_snapshot, tmp_path, "module.generator_optimizer={lr:5e-5,betas:[0.9,0.99]}")
    assert parent.module.generator_optimizer.lr == 5e-5  # a whole node set on the command line wins too
    off = _compose(tiny_flux_snapshot, tmp_path, "profile=none")
    assert off.profile is None and (off.task.rank, off.module.generator_optimizer.lr, off.trainer.max_steps) == (8, 1e-3, 600)
    lokr = _compose(tiny_flux_snapshot, tmp_path, "task.adapter_type=lokr")
    assert (lokr.task.rank, lokr.module.generator_optimizer.lr, lokr.task.gradient_checkpointing) == (8, 1e-3, True)
    with pytest.raises(ConfigError, match="profile='best' is not valid: expected auto, none, flux1-dev, flux1-schnell"):
        _compose(tiny_flux_snapshot, tmp_path, "profile=best")
    with pytest.raises(ConfigError, match="profile=flux1-dev needs pretrained=<a FLUX.1 snapshot>"):
        compose_config(["experiment=flux_lora_latent_adv", "profile=flux1-dev"])


def test_schnell_snapshots_get_few_step_validation_and_their_t5_length(tmp_path, tiny_flux_snapshot):
    schnell = tmp_path / "schnell"
    shutil.copytree(tiny_flux_snapshot, schnell)
    for name, changes in (("transformer/config.json", {"guidance_embeds": False}),
                          ("scheduler/scheduler_config.json", {"use_dynamic_shifting": False, "shift": 1.0})):
        path = schnell / name
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    assert snapshot_profile(schnell) == "flux1-schnell" and snapshot_profile(tiny_flux_snapshot) == "flux1-dev"
    assert snapshot_profile(tmp_path / "nowhere") is None
    cfg = _compose(schnell, tmp_path)
    assert cfg.profile == "flux1-schnell" and list(cfg.task.validation_num_steps) == [1, 2, 4]
    assert (cfg.data.max_sequence_length, cfg.task.timestep_shift, cfg.task.validation_guidance_scale) == (256, 1.0, None)


def test_the_shift_formula_is_the_one_validation_samples_with():
    from advtune.tasks.flux_validation import flux_schedule_shift

    dev = {"use_dynamic_shifting": True, "base_image_seq_len": 256, "max_image_seq_len": 4096, "base_shift": 0.5,
           "max_shift": 1.15}
    assert flux_schedule_shift is schedule_shift  # one formula: validation samples with the profile's shift
    assert (schedule_shift(dev, 256), schedule_shift(dev, 4096)) == pytest.approx((math.exp(0.5), math.exp(1.15)), rel=1e-12)
    assert schedule_shift(dev, 4096) == pytest.approx(3.1582, abs=1e-4)  # kohya's --discrete_flow_shift
    assert all(entry.source for entry in FLUX1_PROFILE)  # every default names where it comes from


def test_the_header_line_names_the_profile(trainer_factory):
    from advtune.console import header_line
    from conftest import ToyTask

    trainer = trainer_factory(max_steps=7)
    module = SimpleNamespace(task=ToyTask(), discriminator=None, run_config="seed: 0\nprofile: flux1-dev\n")
    assert header_line("style", trainer, module).startswith("advtune style (profile flux1-dev) | cpu x1 |")
    module.run_config = "seed: 0\nprofile: null\n"
    assert header_line("style", trainer, module).startswith("advtune style | cpu x1 |")


def test_validation_samples_at_the_inference_guidance_and_training_keeps_its_own(tiny_flux_snapshot):
    from advtune.tasks.flux_lora import FluxLoRATask

    def task(**kwargs):
        return FluxLoRATask(snapshot=str(tiny_flux_snapshot), base_dtype="float32", validation_resolution=32,
                            digits_metric=False, **kwargs)

    inference, plain, trained_at = task(validation_guidance_scale=3.5), task(), task(guidance_scale=3.5)
    draw = [model.sample(1, torch.Generator().manual_seed(0), num_steps=2) for model in (inference, plain, trained_at)]
    assert torch.equal(draw[0], draw[2]) and not torch.equal(draw[0], draw[1])  # 3.5 when sampling, not 1.0
    batch = {"latents": torch.randn(1, 16, 4, 4), "prompt_embeds": torch.randn(1, 16, 32),
             "pooled_prompt_embeds": torch.randn(1, 32)}
    outputs = []
    for model in (inference, plain):
        torch.manual_seed(0)
        outputs.append(model.generator_predict(batch).fake)
    assert torch.equal(outputs[0], outputs[1])  # training runs at guidance_scale (1.0) either way
