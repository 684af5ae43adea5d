"""Tiny FluxTransformer2DModel: build, local loading, FluxPipeline's latent layout, bad inputs."""

from __future__ import annotations

import json

import pytest
import torch

from advtune.models.flux import (
    build_flux_transformer,
    latent_image_ids,
    load_flux_transformer,
    null_prompt,
    pack_latents,
    predict_velocity,
    unpack_latents,
    validate_latents,
)


def _velocity(model, x, t):
    prompt, pooled = null_prompt(model, x.shape[0])
    return predict_velocity(model, x, t, prompt, pooled)


def test_pack_known_values_and_round_trip():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    tokens = pack_latents(x)
    # One token per 2×2 patch, row-major over patches; within a token the patch in row-major order.
    assert tokens.tolist() == [[[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]]
    assert latent_image_ids(4, 4).tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]]
    y = torch.randn(2, 3, 6, 8)
    assert pack_latents(y).shape == (2, 12, 12)
    assert torch.equal(unpack_latents(pack_latents(y), 6, 8), y)


def test_layout_matches_flux_pipeline():
    from diffusers.pipelines.flux.pipeline_flux import FluxPipeline

    x = torch.randn(2, 3, 6, 8)
    packed = FluxPipeline._pack_latents(x, 2, 3, 6, 8)
    assert torch.equal(pack_latents(x), packed)
    # The pipeline unpacks from pixel sizes with its VAE factor (8): 48×64 pixels ↔ 6×8 latents.
    assert torch.equal(unpack_latents(packed, 6, 8), FluxPipeline._unpack_latents(packed, 48, 64, 8))
    assert torch.equal(latent_image_ids(6, 8), FluxPipeline._prepare_latent_image_ids(2, 3, 4, "cpu", torch.float32))


def test_build_is_tiny_seeded_and_predicts_unpacked_velocity():
    model = build_flux_transformer(seed=0)
    assert sum(p.numel() for p in model.parameters()) < 100_000
    assert model.config.in_channels == 4 and len(model.transformer_blocks) == 1
    same = build_flux_transformer(seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters()))
    state = torch.get_rng_state()
    build_flux_transformer(seed=1)
    assert torch.equal(state, torch.get_rng_state())  # seeding does not disturb the caller's RNG
    x = torch.randn(3, 1, 8, 8)
    assert _velocity(model, x, torch.rand(3)).shape == (3, 1, 8, 8)


def test_guidance_embeds_model_runs():
    model = build_flux_transformer(guidance_embeds=True, seed=0)
    prompt, pooled = null_prompt(model, 2)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    low = predict_velocity(model, x, t, prompt, pooled, guidance_scale=1.0)
    high = predict_velocity(model, x, t, prompt, pooled, guidance_scale=4.0)
    assert not torch.allclose(low, high)


def test_from_pretrained_local_dir_gives_identical_model(tmp_path):
    model = build_flux_transformer(seed=3)
    model.save_pretrained(tmp_path / "tiny")
    loaded = load_flux_transformer(tmp_path / "tiny")
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    assert torch.equal(_velocity(model, x, t), _velocity(loaded, x, t))
    model.save_pretrained(tmp_path / "snapshot" / "transformer")
    assert load_flux_transformer(tmp_path / "snapshot", subfolder="transformer").config.in_channels == 4


def test_bad_local_dirs_fail_with_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="directory not found") as missing:
        load_flux_transformer(tmp_path / "nope")
    assert "\n" not in str(missing.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_flux_transformer(tmp_path / "empty")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(ValueError, match="'AutoencoderKL', expected a 'FluxTransformer2DModel'"):
        load_flux_transformer(wrong)
    (wrong / "config.json").write_text(json.dumps({"_class_name": "FluxTransformer2DModel"}))
    with pytest.raises(FileNotFoundError, match="no diffusion_pytorch_model weights"):
        load_flux_transformer(wrong)


def test_latents_of_wrong_shape_fail_with_one_line():
    model = build_flux_transformer(seed=0)
    validate_latents(model, torch.zeros(1, 1, 8, 8))
    for bad, message in [
        (torch.zeros(1, 2, 8, 8), "2-channel latents do not fit .* in_channels=4"),
        (torch.zeros(1, 1, 7, 8), "must be even"),
        (torch.zeros(1, 8, 8), r"expected \(B, C, H, W\)"),
    ]:
        with pytest.raises(ValueError, match=message) as error:
            validate_latents(model, bad)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="axes_dims_rope"):
        build_flux_transformer(attention_head_dim=16, axes_dims_rope=(4, 4, 4))
