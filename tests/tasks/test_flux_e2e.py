"""The issue's two user commands on the tiny FLUX.1 snapshot: captioned folder -> caches -> both stages ->
LoRA files plain diffusers loads -> `advtune generate` PNGs; and the same job under 2-process DDP."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch


def _overrides(snapshot, folder, out, **extra):
    items = {"experiment": "flux_lora_latent_adv", "pretrained": snapshot, "data": "image_folder",
             "data.image_dir": folder, "output_dir": out, "data.resolution": 48,
             "data.instance_prompt": "'a photo, sks style'", "data.max_sequence_length": 16,
             "validation_prompts": "[a red cat,a blue dog]", "task.base_dtype": "float32",
             "task.validation_num_steps": "[1,2]", "trainer.max_steps": 4, "latent_adv_start_step": 2,
             "disc_warmup_steps": 1, "trainer.val_check_interval": 2, "checkpoint_every": 2,
             "trainer.enable_progress_bar": "false", "data.val_fraction": 0.2, **extra}
    return [f"{k}={v}" for k, v in items.items()]


def test_captioned_folder_to_lora_file_to_generated_pngs(tmp_path, tiny_flux_snapshot, captioned_folder, capsys):
    from diffusers import FluxPipeline

    from advtune.cli import main
    from advtune.config import compose_config
    from advtune.runner import train

    folder = captioned_folder(tmp_path / "images")
    out = tmp_path / "style"
    train(compose_config(_overrides(tiny_flux_snapshot, folder, out)))
    printed = capsys.readouterr().out
    assert printed.count("caching latents") == 1 and printed.count("caching text embeddings") == 1
    loras = [out / "pytorch_lora_weights.safetensors", out / "lora" / "step000002" / "pytorch_lora_weights.safetensors"]
    assert all(path.is_file() for path in loras)
    assert (out / "lora" / "step000002" / "discriminator.safetensors").is_file()
    assert sorted(p.name for p in (out / "samples").glob("prompts_*.png"))[-1] == "prompts_0000004.png"

    pipe = FluxPipeline.from_pretrained(str(tiny_flux_snapshot), local_files_only=True)

    def render():
        return pipe("a red cat", num_inference_steps=2, height=32, width=32, output_type="pt", max_sequence_length=16,
                    generator=torch.Generator().manual_seed(0)).images

    base = render()
    for path in loras:
        pipe.load_lora_weights(str(path), adapter_name=path.parent.name)
        pipe.set_adapters([path.parent.name])
        assert (render() - base).abs().max() > 0, path
    pipe.unload_lora_weights()

    generated = tmp_path / "generated"
    assert main(["generate", f"pretrained={tiny_flux_snapshot}", f"lora={loras[0]}", "prompt=a red cat, sks style",
                 "num_steps=4", f"out_dir={generated}", "height=32", "width=32", "max_sequence_length=16"]) == 0
    assert [p.name for p in generated.iterdir()] == ["000.png"]

    train(compose_config(_overrides(tiny_flux_snapshot, folder, tmp_path / "again", **{"trainer.max_steps": 1})))
    assert "caching" not in capsys.readouterr().out  # the second run reads both caches


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_builds_the_caches_once(tmp_path, tiny_flux_snapshot, captioned_folder):
    folder = captioned_folder(tmp_path / "images", sizes=((48, 48),) * 6)
    overrides = _overrides(tiny_flux_snapshot, folder, tmp_path / "out", **{"trainer.devices": 2, "data.val_fraction": 0})
    proc = subprocess.run([sys.executable, "-m", "advtune.cli", "train", *overrides], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stdout + proc.stderr
    assert printed.count("caching latents") == 1 and printed.count("caching text embeddings") == 1
    checkpoint = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4 and (tmp_path / "out" / "pytorch_lora_weights.safetensors").is_file()
    assert np.isfinite([v.float().sum().item() for v in checkpoint["state_dict"].values() if torch.is_tensor(v)]).all()
