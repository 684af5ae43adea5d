"""A folder of captioned images for a FLUX.1 snapshot: latents and text embeddings cached on disk, bucketed.

``data=image_folder``: every image ``photo.png`` is captioned by ``photo.txt`` beside it, else by
``instance_prompt``; neither is a one-line error naming the image. A caching pass before training
(rank 0 only under DDP, in Lightning's ``prepare_data``; the other ranks wait at Lightning's
barrier, then read) encodes only what the caches lack (:mod:`advtune.data.item_cache`):

1. each new or changed image is opened (a corrupt one is named, :mod:`advtune.data.scan`), given an
   aspect-ratio bucket (:mod:`advtune.data.buckets`), encoded by the snapshot's VAE and written to
   its own file in ``latents-<key>/`` (:mod:`advtune.data.latent_cache`);
2. each new distinct caption or validation prompt is encoded by the snapshot's CLIP and T5 into its
   own file in ``text-<key>/`` (:mod:`advtune.data.text_embeddings`); the encoders are freed.

The console says what it encodes (``caching latents of 10 new images (990 cached) ...``). Training
and validation read items from disk per batch: RAM does not grow with the dataset. Training
batches: ``{"latents": (B, 16, h, w), "prompt_embeds": (B, S, 4096), "pooled_prompt_embeds": (B, 768)}``,
one bucket per batch. Validation: first one prompt batch ``{"validation_prompts": [P],
"validation_prompt_embeds": (P, S, D), "validation_pooled_prompt_embeds": (P, D')}`` (the task
renders these), then the held-out images' batches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import lightning
import numpy as np
import torch
from torch.utils.data import DataLoader

from advtune.checks import check_loader_settings
from advtune.config import ConfigError
from advtune.data.buckets import BucketBatchLoader, assign_bucket, bucket_batches, bucket_sizes
from advtune.data.codecs import AutoencoderKLCodec
from advtune.data.item_cache import CachedLatentDataset, ItemCache, ValidationBatches, tagged_shape
from advtune.data.latent_cache import cached_images, encode_new_images, latent_cache
from advtune.data.latents import IMAGE_EXTENSIONS
from advtune.data.text_embeddings import load_prompt_batch

__all__ = ["CaptionedImageFolderDataModule", "caption_for", "load_bucket_image"]

_DEFAULT_VALIDATION_PROMPTS = 4  # captions rendered at validation when no validation_prompts are given


def caption_for(image: Path, instance_prompt: str | None) -> str:
    """``image``'s caption: the text of ``<stem>.txt`` beside it, else ``instance_prompt``."""
    text_file = image.with_suffix(".txt")
    caption = text_file.read_text(encoding="utf-8").strip() if text_file.is_file() else ""
    if caption:
        return caption
    if instance_prompt:
        return instance_prompt
    raise ConfigError(f"image {image} has no caption: add {text_file.name} beside it or set data.instance_prompt=...")


def load_bucket_image(path: Path, size: tuple[int, int] | None = None) -> torch.Tensor | tuple[int, int]:
    """``size=None``: decode ``path`` fully and return its ``(width, height)`` (a scan).
    Else ``(3, h, w)`` in [-1, 1]: resized to cover ``size = (w, h)`` (bicubic), centre-cropped."""
    from PIL import Image

    with Image.open(path) as opened:
        image = opened.convert("RGB")
    if size is None:
        return image.size
    width, height = size
    scale = max(width / image.width, height / image.height)
    resized = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(resized, Image.BICUBIC)
    left, top = (resized[0] - width) // 2, (resized[1] - height) // 2
    array = np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _auto_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


class CaptionedImageFolderDataModule(lightning.LightningDataModule):
    """Captioned images of ``image_dir`` for the Flux task (see the module docstring).

    Args:
        image_dir: folder of ``.png .jpg .jpeg .webp .bmp`` images (recursive), captions beside them.
        snapshot: the FLUX.1 snapshot root (its ``vae``, text encoders and tokenizers are used).
        latent_channels: channels of the VAE's latents (FLUX.1: 16), checked against ``vae/config.json``;
            the task and the latent discriminator read it from the config.
        resolution: pixel budget: buckets have about ``resolution²`` pixels, sides multiples of 16.
        instance_prompt: caption of images without a ``.txt``.
        validation_prompts: prompts rendered at each validation (default: up to 4 dataset captions).
        max_sequence_length: T5 tokens per prompt (FLUX.1-dev: 512, schnell: 256).
        cache_dir: where both caches go (default ``image_dir/.advtune_cache``).
        batch_size, num_workers, seed: loader settings; ``seed`` also fixes the train/val split.
        val_fraction: fraction of images held out for ``val/diffusion_mse`` (0: none).
        encode_batch_size: images per VAE forward while caching.
        device: where the VAE and encoders run while caching (``auto``: CUDA when available).
        encoder_dtype: their dtype (``auto``: bfloat16 on CUDA, float32 on CPU).
        skip_bad_files: ``False``: an unreadable image stops the run, named; ``True``: skipped with a warning.
    """

    def __init__(self, image_dir: str | None, snapshot: str | None, latent_channels: int = 16, resolution: int = 512,
                 instance_prompt: str | None = None, validation_prompts: Sequence[str] | None = None,
                 max_sequence_length: int = 512, cache_dir: str | None = None, batch_size: int = 1,
                 num_workers: int = 0, seed: int = 0, val_fraction: float = 0.1, encode_batch_size: int = 4,
                 device: str = "auto", encoder_dtype: str = "auto", skip_bad_files: bool = False) -> None:
        super().__init__()
        from advtune.models.flux_snapshot import check_flux_snapshot

        if not image_dir:
            raise ConfigError("data=image_folder needs data.image_dir=/path/to/images")
        self.image_dir = Path(image_dir).expanduser()
        if not self.image_dir.is_dir():
            raise ConfigError(f"image folder not found: {self.image_dir}")
        try:
            self.snapshot = check_flux_snapshot(snapshot, ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"))
        except FileNotFoundError as error:
            raise ConfigError(str(error)) from None
        vae_channels = json.loads((self.snapshot / "vae" / "config.json").read_text()).get("latent_channels")
        if vae_channels != latent_channels:
            raise ConfigError(f"data.latent_channels={latent_channels} but {self.snapshot / 'vae'} makes {vae_channels}-channel latents")
        check_loader_settings("data", batch_size, num_workers, seed)
        if not 0.0 <= val_fraction < 1.0 or batch_size < 1:
            raise ConfigError(f"data.val_fraction must be in [0, 1) and batch_size >= 1, got {val_fraction}, {batch_size}")
        self.resolution, self.instance_prompt = int(resolution), instance_prompt
        self.validation_prompts = [str(p) for p in validation_prompts or []]
        self.max_sequence_length, self.batch_size = int(max_sequence_length), int(batch_size)
        self.num_workers, self.seed, self.val_fraction = int(num_workers), int(seed), float(val_fraction)
        self.encode_batch_size, self.skip_bad_files = int(encode_batch_size), bool(skip_bad_files)
        self.device = _auto_device(device)
        if encoder_dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"data.encoder_dtype must be auto, float32, bfloat16 or float16, got {encoder_dtype!r}")
        self.encoder_dtype = getattr(torch, encoder_dtype if encoder_dtype != "auto" else
                                     ("bfloat16" if self.device.startswith("cuda") else "float32"))
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else self.image_dir / ".advtune_cache"
        self.files = sorted(p for p in self.image_dir.rglob("*")
                            if p.suffix.lower() in IMAGE_EXTENSIONS and self.cache_dir not in p.parents)
        if not self.files:
            raise ConfigError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {self.image_dir}")
        self.captions = {path: caption_for(path, instance_prompt) for path in self.files}  # fails before caching
        self.prepare_data_per_node = True  # one caching pass per machine (local rank 0)
        self.train_dataset: CachedLatentDataset | None = None
        self._val_batches: ValidationBatches | None = None
        self._train_buckets: list[tuple[int, int]] = []

    # ---- the caching pass: only new or changed images and captions are encoded ------------------
    def _latent_cache(self) -> ItemCache:
        from advtune.models.flux_snapshot import component_fingerprint

        return latent_cache(self.cache_dir, ["buckets", str(self.resolution), str(self.encoder_dtype),
                                             (self.snapshot / "vae" / "config.json").read_bytes(),
                                             component_fingerprint(self.snapshot, ("vae",))])  # other weights, same config

    def _encode_new_latents(self, cache: ItemCache) -> None:
        vae_config = json.loads((self.snapshot / "vae" / "config.json").read_text())
        sizes = bucket_sizes(self.resolution, 2 ** len(vae_config["block_out_channels"]))  # VAE factor × 2×2 packing
        encode_new_images(cache, self.files, self.image_dir, lambda path: assign_bucket(*load_bucket_image(path), sizes),
                          load_bucket_image, lambda: AutoencoderKLCodec(self.snapshot, "vae", self.device,
                                                                        str(self.encoder_dtype).split(".")[-1]),
                          self.encode_batch_size, self.skip_bad_files, where=f"data.image_dir {self.image_dir}")

    def _caches(self, build: bool) -> tuple[list[Path], list[Path], list[Path], list[Path]]:
        """``(images, their latent files, their captions' files, the validation prompts' files)``;
        with ``build`` the missing items are encoded first."""
        from advtune.data.text_embeddings import cache_prompts, text_cache

        cache = self._latent_cache()
        if build:
            self._encode_new_latents(cache)
        files, latent_files = cached_images(cache, self.files, self.image_dir, self.skip_bad_files,
                                            where=f"data.image_dir {self.image_dir}")
        prompts = [self.captions[path] for path in files] + self.validation_prompts
        text_files = cache_prompts(self.snapshot, prompts, text_cache(self.snapshot, self.cache_dir,
                                   self.max_sequence_length, self.encoder_dtype), self.max_sequence_length,
                                   self.device, self.encoder_dtype, build=build)
        return files, latent_files, text_files[:len(files)], text_files[len(files):]

    def prepare_data(self) -> None:
        """Encode what the caches lack (Lightning calls this on local rank 0 only; the others wait)."""
        self._caches(build=True)

    # ---- datasets and loaders ---------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        files, latent_files, text_files, validation_files = self._caches(
            build=not distributed or torch.distributed.get_rank() == 0)
        buckets = [tagged_shape(path)[1:] for path in latent_files]  # from the file names: nothing is opened
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(self.seed)).tolist()
        num_val = min(max(1, round(self.val_fraction * len(files))), len(files) - 1) if self.val_fraction > 0 else 0
        val, train = order[:num_val], order[num_val:]
        self.train_dataset = CachedLatentDataset([latent_files[i] for i in train], [text_files[i] for i in train])
        self._train_buckets = [buckets[i] for i in train]
        if self.validation_prompts:
            shown, shown_files = self.validation_prompts, validation_files
        else:  # up to a few distinct captions of the folder, held-out images' first
            first = {self.captions[files[i]]: text_files[i] for i in val + train}
            shown = list(first)[:_DEFAULT_VALIDATION_PROMPTS]
            shown_files = [first[p] for p in shown]
        embeds, pooled = load_prompt_batch(shown_files)
        prompt_batch = {"validation_prompts": shown, "validation_prompt_embeds": embeds,
                        "validation_pooled_prompt_embeds": pooled}
        val_items = CachedLatentDataset([latent_files[i] for i in val], [text_files[i] for i in val])
        self._val_batches = ValidationBatches(prompt_batch, val_items,
                                              bucket_batches([buckets[i] for i in val], self.batch_size, generator=None))

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        loader = BucketBatchLoader(self.train_dataset, self._train_buckets, self.batch_size, self.seed,
                                   num_workers=self.num_workers)
        if not len(loader):
            raise ConfigError(f"no bucket of {self.image_dir} holds data.batch_size={self.batch_size} training images; "
                              f"lower data.batch_size")
        return loader

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        # Ready-made batches, prompt batch first; its own generator keeps training's RNG untouched.
        return DataLoader(self._val_batches, batch_size=None, generator=torch.Generator().manual_seed(self.seed))
