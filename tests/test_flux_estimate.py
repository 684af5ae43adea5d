"""The pre-launch estimate: it reproduces bench_flux_scale.py's FLUX.1-dev table, scales as stated, and
`advtune validate-config` prints it for a FLUX.1 adapter job only."""

from __future__ import annotations

import dataclasses
import json

import pytest
from omegaconf import OmegaConf

from advtune.flux_estimate import estimate_lines, estimate_memory_gib, estimate_step_seconds, job_from_config

FLUX_DEV = {"_class_name": "FluxTransformer2DModel", "in_channels": 64, "num_layers": 19, "num_single_layers": 38,
            "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096,
            "pooled_projection_dim": 768, "guidance_embeds": True, "axes_dims_rope": [16, 56, 56]}
LORA_R16 = 65_422_336  # peft LoRA rank 16 on advtune's default targets of FLUX.1-dev (bench_flux_scale.py's run)


def _cfg(snapshot, **task):
    return OmegaConf.create({
        "pretrained": str(snapshot), "data": {"resolution": 512, "max_sequence_length": 512, "batch_size": 1},
        "task": {"_target_": "advtune.tasks.flux_lora.FluxLoRATask", "adapter_type": "lora", "base_dtype": "bfloat16",
                 "quantize": None, "gradient_checkpointing": True, **task},
        "discriminator": {"_target_": "advtune.discriminators.latent.LatentDiscriminator"},
        "module": {"use_adversarial": True, "ema_decay": None}})


@pytest.fixture
def flux_dev_config(tmp_path):
    """Only the transformer config of FLUX.1-dev: the estimate counts parameters on the meta device."""
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text(json.dumps(FLUX_DEV))
    return tmp_path


def test_the_estimate_reproduces_the_benchmark_table_at_512_px(flux_dev_config):
    job = job_from_config(_cfg(flux_dev_config), LORA_R16)
    assert (job.image_tokens, job.text_tokens, job.num_double, job.num_single, job.width) == (1024, 512, 19, 38, 3072)
    assert (job.double_params + job.single_params + job.other_params) == 11_901_408_320
    assert job.feature_checkpointing and not job.rollout  # the feature D follows the base's checkpointing
    # the earlier run's full-depth bf16 rows (the feature D keeping every block's activations)
    table = {("fm", "none"): 24.5, ("latent", "none"): 24.6, ("feature", "none"): 33.4,
             ("fm", "int8"): 13.7, ("latent", "int8"): 13.8, ("feature", "int8"): 31.8}
    for (kind, quant), gib in table.items():
        estimate = estimate_memory_gib(dataclasses.replace(job, discriminator=kind, quantize=quant, feature_blocks=57,
                                                           feature_checkpointing=False))
        assert estimate["total"] == pytest.approx(gib, abs=0.1), (kind, quant)
    # the current run (docs/quickstart/FLUX.md §3): the feature D recomputed with the adapters off adds
    # 25.0 - 24.6 = 0.4 GiB over flow matching, 14.4 - 13.8 = 0.6 over int8 blocks
    for quant, extra in (("none", 0.4), ("int8", 0.6)):
        fm_total = estimate_memory_gib(dataclasses.replace(job, discriminator="fm", quantize=quant))["total"]
        feature_total = estimate_memory_gib(dataclasses.replace(job, discriminator="feature", quantize=quant,
                                                                feature_blocks=57))["total"]
        assert feature_total - fm_total == pytest.approx(extra, abs=0.01), quant
    fm = estimate_step_seconds(dataclasses.replace(job, discriminator="fm"))["tflop"]
    feature = dataclasses.replace(job, discriminator="feature", feature_blocks=57)
    assert estimate_step_seconds(feature)["tflop"] == pytest.approx(2.54 * fm)
    assert estimate_step_seconds(dataclasses.replace(feature, feature_checkpointing=False))["tflop"] == pytest.approx(2.36 * fm)
    distill = job_from_config(_cfg(flux_dev_config, _target_="advtune.tasks.flux_distill.FluxDistillTask",
                                   student_input="rollout"), LORA_R16)
    assert distill.rollout and estimate_step_seconds(distill)["tflop"] == pytest.approx(1.32 * estimate_step_seconds(job)["tflop"])


def test_it_scales_with_resolution_checkpointing_rank_batch_and_feature_blocks(flux_dev_config):
    job = job_from_config(_cfg(flux_dev_config), LORA_R16)
    base = estimate_memory_gib(job)
    big = estimate_memory_gib(dataclasses.replace(job, image_tokens=4096))
    assert big["weights"] == base["weights"] and big["activations"] == pytest.approx(base["activations"] * 4608 / 1536)
    assert estimate_memory_gib(dataclasses.replace(job, checkpointing=False))["activations"] > base["activations"] + 7
    assert estimate_memory_gib(dataclasses.replace(job, lora_params=2 * LORA_R16))["lora"] == pytest.approx(2 * base["lora"])
    assert estimate_memory_gib(dataclasses.replace(job, ema=True))["lora"] == pytest.approx(1.25 * base["lora"])
    assert estimate_memory_gib(dataclasses.replace(job, batch_size=2))["activations"] == pytest.approx(2 * base["activations"])
    feature = {n: estimate_memory_gib(dataclasses.replace(job, discriminator="feature", feature_blocks=n))["discriminator"]
               for n in (10, 57)}
    assert feature[10] == pytest.approx(feature[57] * 10 / 57)
    seconds = estimate_step_seconds(job)
    assert seconds["A100"] > seconds["H100"] > 0
    assert estimate_step_seconds(dataclasses.replace(job, image_tokens=4096))["tflop"] > 3 * seconds["tflop"]  # attention: superlinear
    assert job_from_config(_cfg(flux_dev_config, adapter_type="none"), LORA_R16) is None  # full fine-tuning: not modelled
    assert job_from_config(OmegaConf.create({"pretrained": None, "task": {}}), 0) is None


def test_the_printed_lines_show_inputs_memory_time_and_cards(flux_dev_config):
    lines = estimate_lines(_cfg(flux_dev_config), LORA_R16)
    assert lines[0].startswith("estimate, not a measurement")
    assert "11.9B params (19 + 38 blocks, width 3072), ~512x512 px = 1024 image + 512 text tokens" in lines[1]
    assert "peak GPU memory ~24.6 GiB" in lines[2] and "step time" in lines[3]
    assert lines[4].endswith("24 GB no (task.quantize=int8: ~13.8 GiB) | 40 GB yes | 80 GB yes")
    feature = estimate_lines(_cfg(flux_dev_config, quantize="int8"), LORA_R16)
    assert "base bfloat16 + int8 blocks" in feature[1] and "24 GB yes" in feature[4]


def test_validate_config_prints_the_estimate_for_a_flux1_job(tmp_path, tiny_flux_snapshot, captioned_folder, capsys):
    from advtune.runner import run_command

    folder = captioned_folder(tmp_path / "images")
    run_command("validate-config", ["experiment=flux_lora_latent_adv", f"pretrained={tiny_flux_snapshot}",
                                    "data=image_folder", f"data.image_dir={folder}", "data.instance_prompt=x"])
    printed = capsys.readouterr().out
    assert "estimate, not a measurement" in printed and "1 + 1 blocks" in printed and "gradient checkpointing on" in printed
    run_command("validate-config", ["experiment=digits_gan"])
    assert "estimate" not in capsys.readouterr().out
