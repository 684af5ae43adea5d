"""``trainer.strategy=fsdp``: the Flux job's two-player step on 2 CPU processes (gloo), sharded by torch's FSDP.

The slow test runs ``advtune train`` through :mod:`fsdp_probe` (the same CLI, with probes): both stages
finish, only the LoRA and the discriminator move, every per-player clip uses the norm of the whole
gradient (gathered and computed in one place), what ships loads in plain diffusers with the trained
outputs, the checkpoint loads without FSDP, and a run resumed from its step-2 checkpoint ends with
the same weights. A second slow test runs the issue's snapshot command (bf16 base) under FSDP. The
fast tests check the one-line refusals of what FSDP cannot run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from advtune.cli import main
from advtune.config import ConfigError, compose_config
from advtune.runner import build
from advtune.schedule import Phase

PROBE = Path(__file__).with_name("fsdp_probe.py")
MAX_NORM = 0.01  # small enough that both players' gradients are clipped on every update
OVERRIDES = ["experiment=flux_lora_latent_adv", "module.ema_decay=null", "latent_adv_start_step=1", "disc_warmup_steps=1",
             "trainer.max_steps=4", "checkpoint_every=2", "trainer.val_check_interval=1000",
             "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "trainer.devices=2",
             "trainer.strategy=fsdp", f"module.generator_clip_norm={MAX_NORM}",
             f"module.discriminator_clip_norm={MAX_NORM}"]


def _train(records: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(PROBE), str(records), "train", *OVERRIDES, *extra]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _velocity(transformer: torch.nn.Module) -> torch.Tensor:
    from advtune.models.flux import null_prompt, predict_velocity

    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    prompt, pooled = null_prompt(transformer, 2)
    with torch.no_grad():
        return predict_velocity(transformer, x, torch.tensor([0.3, 0.8]), prompt, pooled)


@pytest.mark.ddp
@pytest.mark.slow
def test_flux_job_under_fsdp_on_two_cpu_processes(tmp_path):
    import lightning as L
    from safetensors.torch import load_file

    from advtune.models.flux import build_flux_transformer
    from advtune.runner import load_run

    out, records = tmp_path / "run", tmp_path / "records"
    proc = _train(records, f"output_dir={out}")
    assert (proc.stdout + proc.stderr).count("advtune flux_lora_latent_adv | cpu x2 | 32-true |") == 1
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4 and ckpt["advtune"]["discriminator_updates"] == 4  # 1 D-only + 3 hybrid steps

    # Clipping per player with the sharded norm: the norm of the whole gradient, on both ranks.
    ranks = [json.loads((records / f"clip_rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 4 + 4  # every G and D update clipped once
    assert sorted(record["player"] for record in ranks[0]) == ["d"] * 4 + ["g"] * 4
    for mine, other in zip(*ranks):
        assert mine["sharded_norm"] == pytest.approx(mine["whole_norm"], rel=1e-5)
        assert other["sharded_norm"] == pytest.approx(mine["sharded_norm"], rel=1e-6)
        assert mine["whole_norm"] > MAX_NORM
        assert mine["whole_norm_after"] == pytest.approx(MAX_NORM, rel=1e-4)

    # Only the LoRA and the discriminator moved.
    cfg = compose_config(OVERRIDES + [f"output_dir={out}"])
    L.seed_everything(int(cfg.seed), verbose=False)
    initial = build(cfg, with_data=False).module
    trained = load_file(str(records / "weights.safetensors"))
    start = dict(initial.named_parameters())
    assert trained.keys() == start.keys()
    moved = {name for name in trained if not torch.equal(trained[name], start[name])}
    trainable = {name for name, p in start.items() if p.requires_grad}
    assert moved <= trainable  # the frozen base did not move
    # Every LoRA weight and discriminator weight did (hinge gives D's output bias a zero gradient, also without FSDP).
    assert {n for n in trainable if ".lora_" in n or n.endswith(".weight")} <= moved
    assert any(".lora_" in n for n in moved) and any(n.startswith("discriminator.") for n in moved)
    sizes = {phase.value: sum(p.numel() for p in initial.player_parameters(phase)) for phase in Phase}
    for mine, other in zip(*ranks):  # each rank clipped its own part of the player's weights
        assert 0 < mine["shard_elements"] < sizes[mine["player"]] == mine["shard_elements"] + other["shard_elements"]

    # What ships loads in plain diffusers and gives the trained transformer's outputs.
    assert initial.load_state_dict(trained, strict=False).unexpected_keys == []
    expected = _velocity(initial.task.transformer)
    plain = build_flux_transformer(**cfg.task.transformer_config)
    plain.load_lora_adapter(str(out), weight_name="pytorch_lora_weights.safetensors", prefix="transformer")
    torch.testing.assert_close(_velocity(plain), expected, atol=1e-6, rtol=1e-5)
    shipped_d = load_file(str(out / "discriminator.safetensors"))
    assert all(torch.equal(v, trained[f"discriminator.{k}"]) for k, v in shipped_d.items())

    # The checkpoint needs no FSDP to load (advtune sample / export).
    single, _ = load_run(out / "checkpoints" / "last.ckpt")
    assert all(torch.equal(p, trained[name]) for name, p in single.named_parameters() if name in trainable)

    # Resumed from the step-2 checkpoint (weights, both optimizers, data position, RNG): the same end.
    resumed, records2 = tmp_path / "resumed", tmp_path / "records2"
    proc = _train(records2, f"output_dir={resumed}", f"ckpt_path={out / 'checkpoints' / 'step000002.ckpt'}")
    assert "at generator update 2" in proc.stdout + proc.stderr
    assert len(json.loads((records2 / "clip_rank0.json").read_text())) == 2 + 2  # updates 3 and 4 only
    again = load_file(str(records2 / "weights.safetensors"))
    assert all(torch.equal(again[name], trained[name]) for name in trainable)


@pytest.mark.ddp
@pytest.mark.slow
def test_snapshot_job_with_a_bf16_base_under_fsdp(tmp_path, tiny_flux_snapshot, captioned_folder):
    """The issue's command on the tiny FLUX.1 snapshot: bf16 base (float32 LoRA units beside bf16 block
    units), gradient checkpointing, caches, prompt validation; plain diffusers loads the LoRA it ships."""
    from diffusers import FluxPipeline

    folder = captioned_folder(tmp_path / "images", sizes=((48, 48),) * 6)
    out = tmp_path / "out"
    items = {"experiment": "flux_lora_latent_adv", "pretrained": tiny_flux_snapshot, "data": "image_folder",
             "data.image_dir": folder, "output_dir": out, "data.resolution": 48, "data.instance_prompt": "'a photo'",
             "data.max_sequence_length": 16, "data.val_fraction": 0.2, "validation_prompts": "[a red cat]",
             "task.validation_num_steps": "[1]", "task.gradient_checkpointing": "true", "trainer.max_steps": 3,
             "latent_adv_start_step": 1, "disc_warmup_steps": 1, "trainer.val_check_interval": 2,
             "trainer.enable_progress_bar": "false", "trainer.devices": 2, "trainer.strategy": "fsdp",
             "module.ema_decay": "null"}
    command = [sys.executable, "-m", "advtune.cli", "train", *(f"{k}={v}" for k, v in items.items())]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "samples" / "prompts_0000003.png").is_file()
    pipe = FluxPipeline.from_pretrained(str(tiny_flux_snapshot), local_files_only=True)

    def render():
        return pipe("a red cat", num_inference_steps=2, height=32, width=32, output_type="pt", max_sequence_length=16,
                    generator=torch.Generator().manual_seed(0)).images

    base = render()
    pipe.load_lora_weights(str(out / "pytorch_lora_weights.safetensors"))
    assert (render() - base).abs().max() > 0


def _flux_module(*extra: str):
    return build(compose_config(["experiment=flux_lora_latent_adv", "output_dir=/tmp/unused", "module.ema_decay=null", *extra]),
                 with_data=False).module


@pytest.mark.parametrize(("extra", "message"), [
    (["module.ema_decay=0.999"], "module.ema_decay"),
    (["discriminator=flux_features"], "discriminator=flux_features"),
    (["task.adapter_type=lokr"], "LyCORIS"),
    (["adversarial.r1_weight=0.1"], "adversarial.r1_weight: a gradient penalty"),
    (["adversarial.use_adaptive_weight=true"], "use_adaptive_weight"),
    (["task.quantize=int8"], "quantized weights"),
])
def test_what_fsdp_cannot_run_is_one_line(extra, message):
    from advtune.training.strategies import check_fsdp_support

    with pytest.raises(ConfigError, match="^trainer.strategy=fsdp: ") as error:
        check_fsdp_support(_flux_module(*extra))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_fsdp_refusals_reach_validate_config_and_cover_other_tasks_and_16_mixed(capsys, gan_overrides, tmp_path):
    from advtune.training.strategies import check_fsdp_support

    assert main(["validate-config", "experiment=flux_lora_latent_adv", f"output_dir={tmp_path}", "trainer.devices=2",
                 "trainer.strategy=fsdp", "module.ema_decay=0.99"]) == 2
    assert "trainer.strategy=fsdp: module.ema_decay" in capsys.readouterr().err
    gan = build(compose_config(gan_overrides(tmp_path)), with_data=False).module
    with pytest.raises(ConfigError, match="DigitsGANTask does not say what to shard"):
        check_fsdp_support(gan)
    with pytest.raises(ConfigError, match="set module.ema_decay=null"):  # the experiment's default EMA
        check_fsdp_support(build(compose_config(["experiment=flux_lora_latent_adv", "output_dir=/tmp/unused"]),
                                 with_data=False).module)
    with pytest.raises(ConfigError, match="16-mixed"):
        check_fsdp_support(_flux_module(), "16-mixed")
    check_fsdp_support(_flux_module(), "bf16-mixed")  # supported: no error
