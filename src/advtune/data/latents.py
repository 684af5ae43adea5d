"""Latents for Flux training: codecs (identity, diffusers ``AutoencoderKL``) and LightningDataModules.

Latent adversarial training never decodes through the VAE during training: images are encoded
*once*, the latents cached on disk as safetensors, and every step reads the cache. Batches are
dicts: ``"latents"`` ``(B, C, H, W)`` always; ``"label"`` ``(B,)`` for digits; and, for a real FLUX.1,
the cached text conditioning ``"prompt_embeds"`` ``(B, S, 4096)`` and ``"pooled_prompt_embeds"``
``(B, 768)`` (see :mod:`advtune.models.flux`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import lightning
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from advtune.checks import check_loader_settings

__all__ = [
    "IdentityCodec",
    "AutoencoderKLCodec",
    "LatentDataset",
    "DigitsLatentDataModule",
    "ImageFolderLatentDataModule",
    "IMAGE_EXTENSIONS",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class IdentityCodec:
    """Pixel space *is* latent space (the built-in digits: 1 channel, values in [-1, 1])."""

    latent_channels = 1
    downsample_factor = 1

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images → the same tensor."""
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` latents → images in [-1, 1] (clamped, as a saved PNG would be)."""
        return latents.clamp(-1.0, 1.0)


class AutoencoderKLCodec:
    """diffusers' ``AutoencoderKL`` loaded from a local directory, with Flux's latent normalisation.

    ``encode``: ``z = (mean(q(z|x)) − shift_factor) · scaling_factor`` (the posterior mean, so the
    cache is deterministic); ``decode`` inverts it. FLUX.1's VAE config has ``scaling_factor=0.3611``
    and ``shift_factor=0.1159``; SD-style VAEs have no shift (0).

    Args:
        local_dir: directory saved with ``save_pretrained`` (or a pipeline snapshot with ``subfolder="vae"``).
        subfolder: sub-directory holding ``config.json``.
        device: where the VAE runs while encoding; ``decode`` moves it to the latents' device first,
            so under DDP each rank decodes on the device Lightning gave it.
        dtype: weight dtype (``"float32"``, ``"bfloat16"``, ``"float16"``).
    """

    def __init__(self, local_dir: str | Path, subfolder: str | None = None, device: str = "cpu",
                 dtype: str = "float32") -> None:
        from diffusers import AutoencoderKL

        from advtune.models.flux import check_pretrained_dir

        model_dir = check_pretrained_dir(local_dir, subfolder, "AutoencoderKL", "AutoencoderKL")
        self.vae = AutoencoderKL.from_pretrained(str(model_dir), local_files_only=True, torch_dtype=getattr(torch, dtype))
        self.vae = self.vae.to(device).eval()
        self.vae.requires_grad_(False)
        self.device = torch.device(device)
        config = self.vae.config
        self.scaling_factor = float(config.scaling_factor)
        self.shift_factor = float(config.shift_factor or 0.0)
        self.latent_channels = int(config.latent_channels)
        self.downsample_factor = 2 ** (len(config.block_out_channels) - 1)
        self.config_json = json.dumps(dict(config), sort_keys=True, default=str)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] → ``(B, C, H / f, W / f)`` normalised latents."""
        posterior = self.vae.encode(images.to(self.device, self.vae.dtype)).latent_dist
        return ((posterior.mode() - self.shift_factor) * self.scaling_factor).float().cpu()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents → ``(B, 3, H, W)`` images in [-1, 1], on CPU."""
        if latents.device != self.device:
            self.vae, self.device = self.vae.to(latents.device), latents.device
        z = latents.to(self.vae.dtype) / self.scaling_factor + self.shift_factor
        return self.vae.decode(z).sample.float().clamp(-1.0, 1.0).cpu()


class LatentDataset(Dataset):
    """``{"latents": (C, H, W), ...}`` items; ``extras`` tensors are indexed alike, ``shared`` ones repeated."""

    def __init__(self, latents: torch.Tensor, extras: dict[str, torch.Tensor] | None = None,
                 shared: dict[str, torch.Tensor] | None = None) -> None:
        self.latents = latents
        self.extras = dict(extras or {})
        self.shared = dict(shared or {})

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"latents": self.latents[index], **self.shared}
        item.update({key: value[index] for key, value in self.extras.items()})
        return item


class _LatentDataModule(lightning.LightningDataModule):
    """Shared loaders: training order seeded and resumable mid-epoch, ``drop_last`` for training."""

    def __init__(self, batch_size: int, num_workers: int, seed: int) -> None:
        super().__init__()
        check_loader_settings("data", batch_size, num_workers, seed)
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)
        self.train_dataset: LatentDataset | None = None
        self.val_dataset: LatentDataset | None = None

    def train_dataloader(self) -> DataLoader:
        from advtune.data.loader import ResumableDataLoader  # seeded order that resumes mid-epoch

        self.setup("fit")
        return ResumableDataLoader(self.train_dataset, batch_size=min(self.batch_size, len(self.train_dataset)),
                                   shuffle=True, seed=self.seed, drop_last=True, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        # Its own generator: starting a loader draws a seed, and validation must not move training's RNG
        # (an extra final validation would otherwise change the run after a resume).
        return DataLoader(self.val_dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed))


class DigitsLatentDataModule(_LatentDataModule):
    """scikit-learn's digits as identity-codec latents ``{"latents": (B, 1, 8·u, 8·u), "label": (B,)}``.

    Args are those of :class:`advtune.data.digits.DigitsDataModule` (``upscale=2`` gives 16×16).
    """

    def __init__(self, batch_size: int = 64, num_workers: int = 0, val_fraction: float = 0.2, seed: int = 0,
                 digits: Sequence[int] | None = None, upscale: int = 1, upscale_mode: str = "nearest") -> None:
        super().__init__(batch_size, num_workers, seed)
        from advtune.data.digits import DigitsDataModule

        self.digits_module = DigitsDataModule(batch_size=batch_size, val_fraction=val_fraction, seed=seed,
                                              digits=digits, upscale=upscale, upscale_mode=upscale_mode)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is None:
            self.digits_module.setup(stage)
            for split in ("train", "val"):
                source = getattr(self.digits_module, f"{split}_dataset")
                dataset = LatentDataset(source.images, extras={"label": source.labels})
                setattr(self, f"{split}_dataset", dataset)


def _load_image(path: Path, resolution: int) -> torch.Tensor:
    """RGB image → ``(3, R, R)`` in [-1, 1]: shorter side resized to ``R`` (bicubic), centre-cropped."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except Exception as error:  # PIL raises many types for broken files; report them all alike
        raise ValueError(f"unreadable image file {path}: {type(error).__name__}: {error}") from None
    scale = resolution / min(image.size)
    width, height = max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))
    image = image.resize((width, height), Image.BICUBIC)
    left, top = (width - resolution) // 2, (height - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class ImageFolderLatentDataModule(_LatentDataModule):
    """Images of a folder, encoded once by an ``AutoencoderKL`` and cached as safetensors.

    ``setup`` checks every image first (an unreadable file fails with one line naming it, before
    any training; ``skip_bad_files=True`` leaves such files out with a warning), then loads ``cache_dir/latents-<key>.safetensors`` or encodes and writes it. The
    key hashes the file names, sizes and modification times, the resolution and the VAE config, so
    a changed folder or VAE is re-encoded and an unchanged one never is.

    Args:
        image_dir: folder of images (``.png .jpg .jpeg .webp .bmp``, searched recursively).
        vae_path: local ``AutoencoderKL`` directory (FLUX.1: the snapshot with ``vae_subfolder="vae"``).
        resolution: square training resolution in pixels; a multiple of ``2 × downsample factor``.
        cache_dir: where the latent cache goes (default ``image_dir/.advtune_cache``).
        prompt_embeds_path: optional safetensors with ``prompt_embeds`` ``(S, D)`` and
            ``pooled_prompt_embeds`` ``(D',)`` of the one instance prompt, added to every item.
        batch_size, num_workers, seed: loader settings; ``seed`` also fixes the train/val split.
        val_fraction: fraction of images held out for validation (at least one when > 0).
        encode_batch_size: images per VAE forward while building the cache.
        vae_subfolder: sub-directory of ``vae_path`` holding the VAE.
        device: where the VAE runs while encoding.
        skip_bad_files: ``False``: an unreadable image stops the run before training, named;
            ``True``: it is left out, with a warning that counts and names the skipped files.
    """

    def __init__(self, image_dir: str | None, vae_path: str | None, resolution: int = 256, cache_dir: str | None = None,
                 prompt_embeds_path: str | None = None, batch_size: int = 4, num_workers: int = 0,
                 seed: int = 0, val_fraction: float = 0.1, encode_batch_size: int = 8,
                 vae_subfolder: str | None = None, device: str = "cpu", skip_bad_files: bool = False) -> None:
        super().__init__(batch_size, num_workers, seed)
        for name, value in (("image_dir", image_dir), ("vae_path", vae_path)):
            if not value:
                raise ValueError(f"ImageFolderLatentDataModule needs {name} (set data.{name}=...)")
        self.image_dir = Path(image_dir).expanduser()
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.image_dir}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        from advtune.models.flux import check_pretrained_dir

        check_pretrained_dir(vae_path, vae_subfolder, "AutoencoderKL", "AutoencoderKL")  # fail before training
        self.vae_path, self.vae_subfolder, self.device = vae_path, vae_subfolder, device
        self.resolution, self.val_fraction = int(resolution), float(val_fraction)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else self.image_dir / ".advtune_cache"
        self.prompt_embeds_path = prompt_embeds_path
        self.encode_batch_size = int(encode_batch_size)
        self.skip_bad_files = bool(skip_bad_files)

    def image_files(self) -> list[Path]:
        """Sorted image files of the folder (cache directory excluded)."""
        files = sorted(p for p in self.image_dir.rglob("*")
                       if p.suffix.lower() in IMAGE_EXTENSIONS and self.cache_dir not in p.parents)
        if not files:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {self.image_dir}")
        return files

    def _cache_key(self, files: list[Path], codec: AutoencoderKLCodec) -> str:
        digest = hashlib.sha256(f"{self.resolution}|{codec.config_json}".encode())
        for path in files:
            stat = path.stat()
            digest.update(f"{path.relative_to(self.image_dir)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:20]

    def encode_all(self) -> torch.Tensor:
        """Latents ``(N, C, h, w)`` of every image, from the cache when it is current."""
        from safetensors.torch import load_file, save_file

        from advtune.data.scan import scan_files

        loaded = scan_files(self.image_files(), lambda path: _load_image(path, self.resolution),
                            self.skip_bad_files, where=f"data.image_dir {self.image_dir}")  # every file, first
        files, images = [path for path, _ in loaded], [image for _, image in loaded]
        codec = AutoencoderKLCodec(self.vae_path, self.vae_subfolder, self.device)
        if self.resolution % (2 * codec.downsample_factor):
            raise ValueError(f"resolution {self.resolution} must be a multiple of {2 * codec.downsample_factor} "
                             f"(VAE downsampling × Flux 2×2 packing)")
        cache_file = self.cache_dir / f"latents-{self._cache_key(files, codec)}.safetensors"
        if cache_file.is_file():
            return load_file(str(cache_file))["latents"]
        batches = [torch.stack(images[i:i + self.encode_batch_size])
                   for i in range(0, len(images), self.encode_batch_size)]
        latents = torch.cat([codec.encode(batch) for batch in batches]).contiguous()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        names = json.dumps([str(p.relative_to(self.image_dir)) for p in files])
        save_file({"latents": latents}, str(cache_file), metadata={"files": names})
        return latents

    def _shared_prompt(self) -> dict[str, torch.Tensor]:
        if self.prompt_embeds_path is None:
            return {}
        from safetensors.torch import load_file

        path = Path(self.prompt_embeds_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"prompt embeddings file not found: {path}")
        tensors = load_file(str(path))
        missing = {"prompt_embeds", "pooled_prompt_embeds"} - set(tensors)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}")
        return {key: tensors[key].float() for key in ("prompt_embeds", "pooled_prompt_embeds")}

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        latents, shared = self.encode_all(), self._shared_prompt()
        order = torch.randperm(len(latents), generator=torch.Generator().manual_seed(self.seed))
        num_val = max(1, round(self.val_fraction * len(latents))) if self.val_fraction > 0 else 0
        num_val = min(num_val, len(latents) - 1)
        self.val_dataset = LatentDataset(latents[order[:num_val]], shared=shared)
        self.train_dataset = LatentDataset(latents[order[num_val:]], shared=shared)
