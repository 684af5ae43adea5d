"""data=image_folder on the tiny FLUX.1 snapshot: one caching pass (VAE + CLIP/T5), buckets, bad input."""

from __future__ import annotations

import pytest
import torch

from advtune.config import ConfigError
from advtune.data import text_embeddings
from advtune.data.image_folder import CaptionedImageFolderDataModule


def _module(folder, snapshot, **kwargs):
    kwargs = {"resolution": 48, "instance_prompt": "a photo, sks style", "max_sequence_length": 16,
              "val_fraction": 0.2, "batch_size": 1, **kwargs}
    return CaptionedImageFolderDataModule(str(folder), str(snapshot), **kwargs)


def test_captions_and_images_are_encoded_once_then_read_from_the_cache(tmp_path, tiny_flux_snapshot, captioned_folder, monkeypatch):
    folder = captioned_folder(tmp_path / "images")
    calls = []
    real_encode = text_embeddings.encode_prompts
    monkeypatch.setattr(text_embeddings, "encode_prompts", lambda *a, **k: calls.append(a[1]) or real_encode(*a, **k))
    data = _module(folder, tiny_flux_snapshot, validation_prompts=["a red cat"])
    data.prepare_data()
    data.setup()
    assert len(calls) == 1 and set(calls[0]) == {"photo 0, sks style", "photo 2, sks style", "photo 4, sks style",
                                                 "a photo, sks style", "a red cat"}  # each distinct prompt once
    cache = sorted(p.name.split("-")[0] for p in (folder / ".advtune_cache").iterdir())
    assert cache == ["latents", "text"]
    shapes = set()
    for batch in data.train_dataloader():
        assert batch["prompt_embeds"].shape == (1, 16, 32) and batch["pooled_prompt_embeds"].shape == (1, 32)
        shapes.add(tuple(batch["latents"].shape))
    assert shapes <= {(1, 16, 4, 8), (1, 16, 8, 4), (1, 16, 6, 6)} and len(shapes) >= 2  # buckets, not squares
    prompt_batch, *image_batches = list(data.val_dataloader())
    assert prompt_batch["validation_prompts"] == ["a red cat"]
    assert prompt_batch["validation_prompt_embeds"].shape == (1, 16, 32)
    assert len(image_batches) == 1 and image_batches[0]["latents"].shape[:2] == (1, 16)

    monkeypatch.setattr(text_embeddings, "encode_prompts", lambda *a, **k: pytest.fail("re-encoded a cached prompt"))
    again = _module(folder, tiny_flux_snapshot, validation_prompts=["a red cat"])
    again.setup()  # reads both caches; neither the VAE nor the encoders run
    assert torch.equal(again.train_dataset.latents[0], data.train_dataset.latents[0])
    assert again._val_batches[0]["validation_prompts"] == ["a red cat"]


def test_default_validation_prompts_are_dataset_captions(tmp_path, tiny_flux_snapshot, captioned_folder):
    data = _module(captioned_folder(tmp_path / "images"), tiny_flux_snapshot)
    data.setup()
    shown = data._val_batches[0]["validation_prompts"]
    assert 1 <= len(shown) <= 4 and set(shown) <= set(data.captions.values())


def test_bad_folders_fail_in_one_line_before_training(tmp_path, tiny_flux_snapshot, captioned_folder):
    folder = captioned_folder(tmp_path / "images", sizes=((32, 32), (32, 32)))
    with pytest.raises(ConfigError, match=r"img1\.png has no caption"):
        _module(folder, tiny_flux_snapshot, instance_prompt=None)
    with pytest.raises(ConfigError, match="data.latent_channels=4 but .* makes 16-channel latents"):
        _module(folder, tiny_flux_snapshot, latent_channels=4)
    with pytest.raises(ConfigError, match="no model_index.json"):
        _module(folder, tmp_path)
    with pytest.raises(ConfigError, match="image folder not found"):
        _module(tmp_path / "nowhere", tiny_flux_snapshot)
    (folder / "img1.png").write_bytes(b"not a png")
    data = _module(folder, tiny_flux_snapshot, val_fraction=0.0)
    with pytest.raises(ConfigError, match=r"1 of 2 files in data.image_dir .* cannot be read: .*img1\.png"):
        data.prepare_data()
    skipping = _module(folder, tiny_flux_snapshot, val_fraction=0.0, skip_bad_files=True)
    skipping.setup()
    assert len(skipping.train_dataset) == 1


def test_cache_keys_change_when_the_weights_do_even_with_the_same_configs(tmp_path, tiny_flux_snapshot, captioned_folder):
    import os
    import shutil

    from advtune.data.text_embeddings import text_cache_key

    snapshot = tmp_path / "snapshot"
    shutil.copytree(tiny_flux_snapshot, snapshot)
    folder = captioned_folder(tmp_path / "images")
    latents_key = _module(folder, snapshot)._latent_cache_file()
    text_key = text_cache_key(snapshot, ["a cat"], 16, torch.float32)
    assert _module(folder, snapshot)._latent_cache_file() == latents_key  # nothing changed: same keys
    assert text_cache_key(snapshot, ["a cat"], 16, torch.float32) == text_key
    for component in ("vae", "text_encoder_2"):  # a replaced weight file (another VAE / T5, same config)
        weights = next((snapshot / component).glob("*.safetensors"))
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert _module(folder, snapshot)._latent_cache_file() != latents_key
    assert text_cache_key(snapshot, ["a cat"], 16, torch.float32) != text_key
