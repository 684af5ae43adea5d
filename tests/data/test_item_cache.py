"""Per-item cache files: keys, atomic writes, header-only shapes, lossless compaction, lazy datasets."""

from __future__ import annotations

import os

import pytest
import torch

from advtune.data.item_cache import (
    CachedLatentDataset,
    ItemCache,
    ValidationBatches,
    compact_latent,
    file_item_key,
    legacy_cache_files,
    read_item,
    shape_tag,
    tagged_shape,
    text_item_key,
    write_item,
)


def test_file_keys_follow_path_size_and_mtime_and_text_keys_the_exact_text(tmp_path):
    (tmp_path / "a").mkdir()
    image = tmp_path / "a" / "x.png"
    image.write_bytes(b"12345")
    key = file_item_key(image, tmp_path)
    assert key == file_item_key(image, tmp_path) and len(key) == 32
    assert file_item_key(image, tmp_path / "a") != key  # the relative path is part of it
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 1))
    assert file_item_key(image, tmp_path) != key
    assert text_item_key("a cat") != text_item_key("a cat ") and text_item_key("a cat") == text_item_key("a cat")


def test_writes_are_atomic_a_failed_write_leaves_no_item(tmp_path, monkeypatch):
    import safetensors.torch

    cache = ItemCache(tmp_path / "latents-k")
    path = cache.path("abc")
    real_save = safetensors.torch.save_file

    def crash(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata)
        with open(filename, "r+b") as handle:  # a half-written file, then the process "dies"
            handle.truncate(20)
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        write_item(path, {"latents": torch.ones(2, 3)})
    assert not path.exists() and cache.missing(["abc"]) == [0]  # a reader never sees half a file
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    write_item(path, {"latents": torch.ones(2, 3)}, metadata={"prompt": "x"})
    assert cache.missing(["abc", "def"]) == [1] and torch.equal(read_item(path)["latents"], torch.ones(2, 3))
    assert [p.name for p in cache.directory.iterdir() if not p.name.startswith(".")] == ["abc.safetensors"]


def test_shapes_live_in_file_names_and_one_listing_finds_every_item(tmp_path):
    cache = ItemCache(tmp_path / "latents-k")
    assert cache.listing() == {} and cache.missing(["a"]) == [0]
    path = cache.path("a1", shape_tag((16, 6, 10)))
    write_item(path, {"latents": torch.zeros(16, 6, 10)})
    write_item(cache.path("b2"), {"prompt_embeds": torch.zeros(3)})
    (cache.directory / ".c3.safetensors.123.partial").write_bytes(b"half")  # a writer still at work (or killed)
    assert path.name == "a1.16x6x10.safetensors" and tagged_shape(path) == (16, 6, 10)
    assert cache.listing() == {"a1": path, "b2": cache.path("b2")} and cache.missing(["b2", "c3", "a1"]) == [1]


def test_lossless_bf16_compaction():
    bf16_values = torch.randn(16, 4, 4).to(torch.bfloat16).float()  # what a bf16 VAE's latents are after .float()
    assert compact_latent(bf16_values).dtype == torch.bfloat16 and torch.equal(compact_latent(bf16_values).float(), bf16_values)
    full = torch.randn(16, 4, 4) + 1e-3
    assert compact_latent(full).dtype == torch.float32 and torch.equal(compact_latent(full), full)


def test_datasets_read_items_from_disk_and_share_caption_files(tmp_path):
    latents = [tmp_path / f"l{i}.safetensors" for i in range(3)]
    for i, path in enumerate(latents):
        write_item(path, {"latents": compact_latent(torch.full((2, 2, 2), float(i)))})
    caption = tmp_path / "c.safetensors"
    write_item(caption, {"prompt_embeds": torch.arange(6.0).reshape(3, 2), "pooled_prompt_embeds": torch.ones(4)})
    dataset = CachedLatentDataset(latents, [caption] * 3)
    item = dataset[2]
    assert item["latents"].dtype == torch.float32 and item["latents"].eq(2).all()
    assert item["prompt_embeds"].shape == (3, 2) and item["pooled_prompt_embeds"].shape == (4,)
    assert vars(dataset).keys() == {"latent_files", "text_files", "shared"}  # paths only: nothing loaded up front
    shared = CachedLatentDataset(latents[:1], shared={"prompt_embeds": torch.zeros(5)})[0]
    assert set(shared) == {"latents", "prompt_embeds"}
    with pytest.raises(ValueError, match="3 latent files for 1 caption files"):
        CachedLatentDataset(latents, [caption])
    batches = ValidationBatches({"validation_prompts": ["p"]}, dataset, [[0, 2], [1]])
    assert len(batches) == 3 and batches[0] == {"validation_prompts": ["p"]}
    assert batches[1]["latents"][:, 0, 0, 0].tolist() == [0.0, 2.0] and batches[2]["prompt_embeds"].shape == (1, 3, 2)


def test_old_single_file_caches_are_found_to_be_named(tmp_path):
    assert legacy_cache_files(tmp_path / "none") == []
    for name in ("latents-abc.safetensors", "text-abc.safetensors", "other.safetensors"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "latents-def").mkdir()
    assert [p.name for p in legacy_cache_files(tmp_path)] == ["latents-abc.safetensors", "text-abc.safetensors"]
