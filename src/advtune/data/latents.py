"""Latents for Flux training: LightningDataModules of latents (and the codecs, from :mod:`advtune.data.codecs`).

Latent adversarial training never decodes through the VAE during training: images are encoded
*once*, each latent cached on disk as safetensors, and every batch reads its items from the cache. Batches are
dicts: ``"latents"`` ``(B, C, H, W)`` always; ``"label"`` ``(B,)`` for digits; and, for a real FLUX.1,
the cached text conditioning ``"prompt_embeds"`` ``(B, S, 4096)`` and ``"pooled_prompt_embeds"``
``(B, 768)`` (see :mod:`advtune.models.flux`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import lightning
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from advtune.data.codecs import AutoencoderKLCodec, IdentityCodec
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
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None

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
    """Images of a folder, square-cropped, encoded by an ``AutoencoderKL``, one cached latent per image.

    Before training (``prepare_data``; under DDP local rank 0, the others wait), the images without
    a cached latent are opened (an unreadable file fails with one line naming it;
    ``skip_bad_files=True`` leaves it out with a warning), encoded and written to
    ``cache_dir/latents-<key>/`` (:mod:`advtune.data.latent_cache`): a changed or added image is
    encoded alone, an unchanged one never again. Batches read their latents from disk.

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

        self.vae_dir = check_pretrained_dir(vae_path, vae_subfolder, "AutoencoderKL", "AutoencoderKL")  # fail early
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

    def latent_files(self, build: bool = True) -> list[Path]:
        """The cached latent ``(C, R/f, R/f)`` of every readable image, encoding the missing ones first
        (``build=False``: a DDP rank other than 0 only reads)."""
        from advtune.data.latent_cache import cached_images, encode_new_images, latent_cache
        from advtune.models.flux_snapshot import component_fingerprint

        config = (self.vae_dir / "config.json").read_bytes()
        factor = 2 ** (len(json.loads(config)["block_out_channels"]) - 1)
        if self.resolution % (2 * factor):
            raise ValueError(f"resolution {self.resolution} must be a multiple of {2 * factor} "
                             f"(VAE downsampling × Flux 2×2 packing)")
        cache = latent_cache(self.cache_dir, ["square", str(self.resolution), config,
                                              component_fingerprint(self.vae_dir, (".",))])
        files, where = self.image_files(), f"data.image_dir {self.image_dir}"
        if build:
            encode_new_images(cache, files, self.image_dir, lambda path: _load_image(path, self.resolution).shape,
                              lambda path, _: _load_image(path, self.resolution),
                              lambda: AutoencoderKLCodec(self.vae_path, self.vae_subfolder, self.device),
                              self.encode_batch_size, self.skip_bad_files, where)
        return cached_images(cache, files, self.image_dir, self.skip_bad_files, where)[1]

    def prepare_data(self) -> None:
        """Encode the images the cache lacks (Lightning: local rank 0 only; the others wait)."""
        self.latent_files(build=True)

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
        from advtune.data.item_cache import CachedLatentDataset

        if self.train_dataset is not None:
            return
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        files = self.latent_files(build=not distributed or torch.distributed.get_rank() == 0)
        shared = self._shared_prompt()
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(self.seed)).tolist()
        num_val = max(1, round(self.val_fraction * len(files))) if self.val_fraction > 0 else 0
        num_val = min(num_val, len(files) - 1)
        self.val_dataset = CachedLatentDataset([files[i] for i in order[:num_val]], shared=shared)
        self.train_dataset = CachedLatentDataset([files[i] for i in order[num_val:]], shared=shared)
