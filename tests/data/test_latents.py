"""Latent codecs and latent data modules: digits, an image folder encoded once by a real AutoencoderKL."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advtune.data.latents import (
    AutoencoderKLCodec,
    DigitsLatentDataModule,
    IdentityCodec,
    ImageFolderLatentDataModule,
)


@pytest.fixture
def vae_dir(tmp_path):
    """A tiny real AutoencoderKL (1 latent channel, 2× downsampling) saved with save_pretrained."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8), layers_per_block=1, latent_channels=1, norm_num_groups=8,
        sample_size=8, scaling_factor=0.5, shift_factor=0.1,
    )
    vae.save_pretrained(tmp_path / "vae")
    return tmp_path / "vae"


def _write_images(folder, count=3, size=12):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def test_identity_codec_is_pixel_space():
    codec, x = IdentityCodec(), torch.linspace(-2, 2, 8).reshape(1, 1, 2, 4)
    assert torch.equal(codec.encode(x), x)
    assert codec.decode(x).min() == -1 and codec.decode(x).max() == 1


@pytest.mark.parametrize("upscale,size", [(1, 8), (2, 16)])
def test_digits_latent_batches(upscale, size):
    data = DigitsLatentDataModule(batch_size=16, upscale=upscale, digits=[0, 1])
    batch = next(iter(data.train_dataloader()))
    assert batch["latents"].shape == (16, 1, size, size) and set(batch["label"].tolist()) <= {0, 1}
    assert batch["latents"].min() >= -1 and batch["latents"].max() <= 1
    assert len(data.val_dataset) > 0


def test_autoencoder_codec_applies_flux_normalisation(vae_dir):
    codec = AutoencoderKLCodec(vae_dir)
    assert (codec.scaling_factor, codec.shift_factor, codec.latent_channels, codec.downsample_factor) == (0.5, 0.1, 1, 2)
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    latents = codec.encode(images)
    with torch.no_grad():
        mean = codec.vae.encode(images).latent_dist.mode()
        assert torch.allclose(latents, (mean - 0.1) * 0.5)
        assert torch.allclose(codec.decode(latents), codec.vae.decode(mean).sample.clamp(-1, 1), atol=1e-5)
    assert latents.shape == (2, 1, 4, 4)
    with pytest.raises(FileNotFoundError, match="AutoencoderKL directory not found"):
        AutoencoderKLCodec(vae_dir / "missing")


def test_image_folder_is_encoded_once_per_image_and_read_per_batch(tmp_path, vae_dir, capsys):
    from advtune.data.codecs import AutoencoderKLCodec
    from advtune.data.latents import _load_image

    folder = _write_images(tmp_path / "images", count=4)
    data = ImageFolderLatentDataModule(str(folder), str(vae_dir), resolution=8, batch_size=2, val_fraction=0.25)
    data.setup()
    assert "caching latents of 4 new images (0 cached)" in capsys.readouterr().out
    caches = list((folder / ".advtune_cache").glob("latents-*/*.safetensors"))
    assert len(caches) == 4 and len(data.train_dataset) == 3 and len(data.val_dataset) == 1
    batch = next(iter(data.train_dataloader()))
    assert batch["latents"].shape == (2, 1, 4, 4) and batch["latents"].dtype == torch.float32
    codec = AutoencoderKLCodec(vae_dir)
    images = torch.stack([_load_image(path, 8) for path in sorted(folder.glob("*.png"))])  # one encoder batch, as cached
    expected = {tuple(latent.flatten().tolist()) for latent in codec.encode(images)}
    assert all(tuple(item["latents"].flatten().tolist()) in expected for item in data.train_dataset)
    mtimes = sorted(p.stat().st_mtime_ns for p in caches)
    again = ImageFolderLatentDataModule(str(folder), str(vae_dir), resolution=8, val_fraction=0.25)
    assert again.latent_files() == data.latent_files() and "caching" not in capsys.readouterr().out
    assert sorted(p.stat().st_mtime_ns for p in caches) == mtimes  # read back, not rewritten
    _write_images(tmp_path / "images", count=5)  # rewrites img0-3 (new mtimes) and adds img4
    ImageFolderLatentDataModule(str(folder), str(vae_dir), resolution=8).setup()
    assert "caching latents of 5 new images (0 cached)" in capsys.readouterr().out
    (folder / "img5.png").write_bytes((folder / "img4.png").read_bytes())  # one more image: only it is encoded
    ImageFolderLatentDataModule(str(folder), str(vae_dir), resolution=8).setup()
    assert "caching latents of 1 new images (5 cached)" in capsys.readouterr().out


def test_shared_prompt_embeddings_join_every_batch(tmp_path, vae_dir):
    from safetensors.torch import save_file

    folder = _write_images(tmp_path / "images", count=2)
    save_file({"prompt_embeds": torch.randn(3, 8), "pooled_prompt_embeds": torch.randn(8)}, str(tmp_path / "p.safetensors"))
    data = ImageFolderLatentDataModule(str(folder), str(vae_dir), resolution=8, batch_size=2, val_fraction=0.0,
                                       prompt_embeds_path=str(tmp_path / "p.safetensors"))
    batch = next(iter(data.train_dataloader()))
    assert batch["prompt_embeds"].shape == (2, 3, 8) and batch["pooled_prompt_embeds"].shape == (2, 8)


def test_bad_image_folders_fail_with_one_line(tmp_path, vae_dir):
    folder = _write_images(tmp_path / "images", count=2)
    (folder / "broken.png").write_bytes(b"not a png")
    data = ImageFolderLatentDataModule(str(folder), str(vae_dir), resolution=8)
    with pytest.raises(ValueError, match="unreadable image file .*broken.png") as error:
        data.prepare_data()
    assert "\n" not in str(error.value)
    (folder / "broken.png").unlink()
    with pytest.raises(ValueError, match="resolution 6 must be a multiple of 4"):
        ImageFolderLatentDataModule(str(folder), str(vae_dir), resolution=6).setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageFolderLatentDataModule(str(tmp_path / "empty"), str(vae_dir)).setup()
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        ImageFolderLatentDataModule(str(tmp_path / "nope"), str(vae_dir))
    with pytest.raises(FileNotFoundError, match="AutoencoderKL directory not found"):
        ImageFolderLatentDataModule(str(folder), str(tmp_path / "no_vae"))
    with pytest.raises(ValueError, match="needs vae_path"):
        ImageFolderLatentDataModule(str(folder), None)
