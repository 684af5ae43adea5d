"""The tiny FLUX.1-layout snapshot: plain diffusers loads and runs it; a bad snapshot is named in one line."""

from __future__ import annotations

import shutil

import pytest
import torch

from advtune.models.flux_snapshot import SNAPSHOT_COMPONENTS, check_flux_snapshot


def test_flux_pipeline_loads_and_runs_the_tiny_snapshot(tiny_flux_snapshot):
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(str(tiny_flux_snapshot), local_files_only=True)
    assert pipe.transformer.config.in_channels == 64 and pipe.transformer.config.guidance_embeds  # FLUX.1-dev layout
    assert pipe.vae.config.latent_channels == 16 and pipe.vae_scale_factor == 8
    assert pipe.scheduler.config.use_dynamic_shifting
    clip_ids = pipe.tokenizer("a photo of a cat").input_ids
    assert clip_ids[0] == pipe.tokenizer.bos_token_id and clip_ids[-1] == pipe.tokenizer.eos_token_id
    assert pipe.tokenizer.decode(clip_ids, skip_special_tokens=True) == "a photo of a cat"
    assert pipe.tokenizer_2("a photo of a cat").input_ids[-1] == pipe.tokenizer_2.eos_token_id == 1
    images = pipe("a photo of a cat", num_inference_steps=2, height=32, width=48, output_type="pt",
                  generator=torch.Generator().manual_seed(0), max_sequence_length=16).images
    assert images.shape == (1, 3, 32, 48) and torch.isfinite(images).all()


def test_wrong_or_incomplete_snapshot_is_named_in_one_line(tmp_path, tiny_flux_snapshot):
    assert check_flux_snapshot(tiny_flux_snapshot) == tiny_flux_snapshot
    with pytest.raises(FileNotFoundError, match="snapshot directory not found"):
        check_flux_snapshot(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        check_flux_snapshot(tmp_path)
    with pytest.raises(FileNotFoundError, match="set pretrained="):
        check_flux_snapshot(None)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_flux_snapshot, broken)
    shutil.rmtree(broken / "text_encoder_2")
    (broken / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(FileNotFoundError) as error:
        check_flux_snapshot(broken)
    message = str(error.value)
    assert "\n" not in message and "text_encoder_2/config.json, scheduler/scheduler_config.json" in message
    assert check_flux_snapshot(broken, ("transformer", "vae")) == broken  # what a caller needs, only
    assert set(SNAPSHOT_COMPONENTS) == {"transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer",
                                        "tokenizer_2", "scheduler"}
