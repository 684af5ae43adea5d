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
    real_encode = text_embeddings.iter_prompt_embeddings
    monkeypatch.setattr(text_embeddings, "iter_prompt_embeddings", lambda *a, **k: calls.append(a[1]) or real_encode(*a, **k))
    data = _module(folder, tiny_flux_snapshot, validation_prompts=["a red cat"])
    data.prepare_data()
    data.setup()
    assert len(calls) == 1 and set(calls[0]) == {"photo 0, sks style", "photo 2, sks style", "photo 4, sks style",
                                                 "a photo, sks style", "a red cat"}  # each distinct prompt once
    cache = sorted(p.name.split("-")[0] for p in (folder / ".advtune_cache").iterdir())
    assert cache == ["latents", "text"]  # two directories: one file per image, one per distinct prompt
    assert len(list((folder / ".advtune_cache").glob("latents-*/*.safetensors"))) == 6
    assert len(list((folder / ".advtune_cache").glob("text-*/*.safetensors"))) == 5
    shapes = set()
    for batch in data.train_dataloader():
        assert batch["prompt_embeds"].shape == (1, 16, 32) and batch["pooled_prompt_embeds"].shape == (1, 32)
        shapes.add(tuple(batch["latents"].shape))
    assert shapes <= {(1, 16, 4, 8), (1, 16, 8, 4), (1, 16, 6, 6)} and len(shapes) >= 2  # buckets, not squares
    prompt_batch, *image_batches = list(data.val_dataloader())
    assert prompt_batch["validation_prompts"] == ["a red cat"]
    assert prompt_batch["validation_prompt_embeds"].shape == (1, 16, 32)
    assert len(image_batches) == 1 and image_batches[0]["latents"].shape[:2] == (1, 16)

    monkeypatch.setattr(text_embeddings, "iter_prompt_embeddings", lambda *a, **k: pytest.fail("re-encoded a cached prompt"))
    again = _module(folder, tiny_flux_snapshot, validation_prompts=["a red cat"])
    again.setup()  # reads both caches; neither the VAE nor the encoders run
    assert torch.equal(again.train_dataset[0]["latents"], data.train_dataset[0]["latents"])
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
    latents_key = _module(folder, snapshot)._latent_cache().directory
    text_key = text_cache_key(snapshot, 16, torch.float32)
    assert _module(folder, snapshot)._latent_cache().directory == latents_key  # nothing changed: same keys
    assert text_cache_key(snapshot, 16, torch.float32) == text_key
    assert _module(folder, snapshot, resolution=32)._latent_cache().directory != latents_key
    assert text_cache_key(snapshot, 32, torch.float32) != text_key != text_cache_key(snapshot, 16, torch.bfloat16)
    for component in ("vae", "text_encoder_2"):  # a replaced weight file (another VAE / T5, same config)
        weights = next((snapshot / component).glob("*.safetensors"))
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert _module(folder, snapshot)._latent_cache().directory != latents_key
    assert text_cache_key(snapshot, 16, torch.float32) != text_key


def test_adding_images_and_captions_encodes_only_those_and_items_match_the_encoders(
        tmp_path, tiny_flux_snapshot, captioned_folder, monkeypatch, capsys):
    from diffusers import FluxPipeline

    from advtune.data.codecs import AutoencoderKLCodec
    from advtune.data.image_folder import load_bucket_image
    from advtune.data.item_cache import file_item_key

    folder = captioned_folder(tmp_path / "images")
    data = _module(folder, tiny_flux_snapshot, val_fraction=0.0)
    data.prepare_data()
    printed = capsys.readouterr().out
    assert "caching latents of 6 new images (0 cached)" in printed and "text embeddings of 4 new prompts (0 cached" in printed
    data.setup()
    before = {str(f): f.read_bytes() for f in (folder / ".advtune_cache").rglob("*.safetensors")}

    encoded = []
    real_encode = AutoencoderKLCodec.encode
    monkeypatch.setattr(AutoencoderKLCodec, "encode", lambda self, images: encoded.append(len(images)) or real_encode(self, images))
    captioned_folder(tmp_path / "more", sizes=((32, 64),) * 2)  # two new images: a new caption and an uncaptioned one
    for name in ("img0", "img1"):
        (tmp_path / "more" / f"{name}.png").rename(folder / f"new_{name}.png")
    (tmp_path / "more" / "img0.txt").write_text("a new caption, sks style")
    (tmp_path / "more" / "img0.txt").rename(folder / "new_img0.txt")
    more = _module(folder, tiny_flux_snapshot, val_fraction=0.0)
    more.prepare_data()
    printed = capsys.readouterr().out
    assert "caching latents of 2 new images (6 cached)" in printed and sum(encoded) == 2
    assert "caching text embeddings of 1 new prompts (4 cached" in printed
    after = {str(f): f.read_bytes() for f in (folder / ".advtune_cache").rglob("*.safetensors")}
    assert all(after[name] == content for name, content in before.items())  # nothing cached was rewritten
    assert len(after) == len(before) + 3

    (folder / "img2.txt").write_text("photo 2, edited caption")  # an edited caption: only its text is encoded
    edited = _module(folder, tiny_flux_snapshot, val_fraction=0.0)
    edited.prepare_data()
    printed = capsys.readouterr().out
    assert "caching latents" not in printed and "text embeddings of 1 new prompts (4 cached" in printed
    edited.setup()
    assert len(edited.train_dataset) == 8 and sum(encoded) == 2

    index = edited.train_dataset.latent_files.index(edited._latent_cache().listing()[file_item_key(folder / "new_img0.png", folder)])
    item = edited.train_dataset[index]  # the transformer's inputs equal the encoders' outputs for that image
    codec = AutoencoderKLCodec(tiny_flux_snapshot, "vae")
    bucket = (item["latents"].shape[2] * 8, item["latents"].shape[1] * 8)
    assert torch.allclose(item["latents"], real_encode(codec, load_bucket_image(folder / "new_img0.png", bucket)[None])[0], atol=1e-6)
    pipe = FluxPipeline.from_pretrained(str(tiny_flux_snapshot), transformer=None, vae=None, local_files_only=True)
    embeds, pooled = pipe.encode_prompt(["a new caption, sks style"], prompt_2=None, max_sequence_length=16)[:2]
    assert item["prompt_embeds"].shape == (16, 32)  # T5 padded to max_sequence_length, as FluxPipeline pads
    assert torch.allclose(item["prompt_embeds"], embeds[0], atol=1e-6) and torch.allclose(item["pooled_prompt_embeds"], pooled[0], atol=1e-6)


def test_a_rank_that_only_reads_refuses_missing_items_and_reads_complete_caches(tmp_path, tiny_flux_snapshot, captioned_folder):
    folder = captioned_folder(tmp_path / "images")
    with pytest.raises(FileNotFoundError, match="6 images of data.image_dir .* have no cached latent"):
        _module(folder, tiny_flux_snapshot)._caches(build=False)
    _module(folder, tiny_flux_snapshot).prepare_data()  # rank 0
    files, latent_files, text_files, validation_files = _module(folder, tiny_flux_snapshot)._caches(build=False)
    assert len(files) == len(latent_files) == len(text_files) == 6 and validation_files == []
    with pytest.raises(FileNotFoundError, match="1 prompts have no cached embeddings"):
        _module(folder, tiny_flux_snapshot, validation_prompts=["never encoded"])._caches(build=False)
