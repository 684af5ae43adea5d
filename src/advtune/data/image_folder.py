"""A folder of captioned images for a FLUX.1 snapshot: latents and text embeddings cached once, bucketed.

``data=image_folder``: every image ``photo.png`` is captioned by ``photo.txt`` beside it, else by
``instance_prompt``; neither is a one-line error naming the image. One caching pass, before
training (rank 0 only under DDP, in Lightning's ``prepare_data``; the other ranks wait at
Lightning's barrier, then read):

1. every image is opened (a corrupt one is named, :mod:`advtune.data.scan`), given an
   aspect-ratio bucket (:mod:`advtune.data.buckets`), encoded by the snapshot's VAE and written to
   ``latents-<key>.safetensors``;
2. the distinct captions and the validation prompts are encoded by the snapshot's CLIP and T5
   (:mod:`advtune.data.text_embeddings`) into ``text-<key>.safetensors``; the encoders are freed.

Training batches: ``{"latents": (B, 16, h, w), "prompt_embeds": (B, S, 4096), "pooled_prompt_embeds":
(B, 768)}``, one bucket per batch. Validation: first one prompt batch ``{"validation_prompts":
[P], "validation_prompt_embeds": (P, S, D), "validation_pooled_prompt_embeds": (P, D')}`` (the
task renders these), then the held-out images' batches.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import lightning
import numpy as np
import torch
from torch.utils.data import DataLoader

from advtune.checks import check_loader_settings
from advtune.config import ConfigError
from advtune.data.buckets import BucketBatchLoader, assign_bucket, bucket_batches, bucket_sizes
from advtune.data.latents import IMAGE_EXTENSIONS, AutoencoderKLCodec, LatentDataset

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
        self.train_dataset: LatentDataset | None = None
        self._val_batches: list[dict[str, Any]] = []
        self._train_buckets: list[tuple[int, int]] = []

    # ---- the one caching pass --------------------------------------------------------------
    def _latent_cache_file(self) -> Path:
        from advtune.models.flux_snapshot import component_fingerprint

        vae_config = (self.snapshot / "vae" / "config.json").read_bytes()
        digest = hashlib.sha256(f"{self.resolution}|{self.encoder_dtype}|".encode() + vae_config)
        digest.update(component_fingerprint(self.snapshot, ("vae",)))  # other VAE weights, same config
        for path in self.files:
            stat = path.stat()
            digest.update(f"{path.relative_to(self.image_dir)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        return self.cache_dir / f"latents-{digest.hexdigest()[:20]}.safetensors"

    def _encode_latents(self, cache_file: Path) -> None:
        from safetensors.torch import save_file

        from advtune.data.scan import scan_files

        print(f"caching latents of {len(self.files)} images of {self.image_dir} into {self.cache_dir} (once)")
        codec = AutoencoderKLCodec(self.snapshot, "vae", self.device, str(self.encoder_dtype).split(".")[-1])
        sizes = bucket_sizes(self.resolution, 2 * codec.downsample_factor)
        scanned = scan_files(self.files, load_bucket_image, self.skip_bad_files, where=f"data.image_dir {self.image_dir}")
        buckets = [assign_bucket(*size, sizes) for _, size in scanned]
        tensors: dict[str, torch.Tensor] = {}
        for batch in bucket_batches(buckets, self.encode_batch_size, generator=None):
            images = torch.stack([load_bucket_image(scanned[i][0], buckets[i]) for i in batch])
            for i, latent in zip(batch, codec.encode(images)):
                tensors[f"latents.{i}"] = latent.contiguous()
        names = [str(path.relative_to(self.image_dir)) for path, _ in scanned]
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_suffix(".partial")
        save_file(tensors, str(partial), metadata={"files": json.dumps(names)})
        partial.replace(cache_file)  # atomic: a reader never sees half a file

    def _caches(self, build: bool) -> tuple[list[Path], list[torch.Tensor], dict[str, torch.Tensor], list[str]]:
        from safetensors import safe_open

        from advtune.data.text_embeddings import load_or_encode_prompts

        cache_file = self._latent_cache_file()
        if not cache_file.is_file():
            if not build:
                raise FileNotFoundError(f"latent cache {cache_file} is missing; rank 0 builds it in prepare_data")
            self._encode_latents(cache_file)
        with safe_open(str(cache_file), "pt") as handle:
            files = [self.image_dir / name for name in json.loads(handle.metadata()["files"])]
            latents = [handle.get_tensor(f"latents.{i}") for i in range(len(files))]
        prompts = list(dict.fromkeys([self.captions[path] for path in files] + self.validation_prompts))
        self.prompt_index = {prompt: i for i, prompt in enumerate(prompts)}
        text = load_or_encode_prompts(self.snapshot, prompts, self.cache_dir, self.max_sequence_length,
                                      self.device, self.encoder_dtype, build=build)
        return files, latents, text, prompts

    def prepare_data(self) -> None:
        """Build both caches (Lightning calls this on local rank 0 only; the others wait)."""
        self._caches(build=True)

    # ---- datasets and loaders ---------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        files, latents, text, prompts = self._caches(build=not distributed or torch.distributed.get_rank() == 0)
        caption_index = torch.tensor([self.prompt_index[self.captions[path]] for path in files])
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(self.seed)).tolist()
        num_val = min(max(1, round(self.val_fraction * len(files))), len(files) - 1) if self.val_fraction > 0 else 0
        val, train = order[:num_val], order[num_val:]

        def items(indices: list[int]) -> dict[str, Any]:
            index = caption_index[indices]
            return {"latents": [latents[i] for i in indices], "prompt_embeds": text["prompt_embeds"][index],
                    "pooled_prompt_embeds": text["pooled_prompt_embeds"][index]}

        train_items = items(train)
        self.train_dataset = LatentDataset(train_items.pop("latents"), extras=train_items)
        self._train_buckets = [tuple(latents[i].shape[1:]) for i in train]
        shown = self.validation_prompts or list(dict.fromkeys(self.captions[files[i]] for i in val + train))
        shown = shown[: len(self.validation_prompts) or _DEFAULT_VALIDATION_PROMPTS]
        shown_index = torch.tensor([self.prompt_index[p] for p in shown])
        self._val_batches = [{"validation_prompts": shown,
                              "validation_prompt_embeds": text["prompt_embeds"][shown_index],
                              "validation_pooled_prompt_embeds": text["pooled_prompt_embeds"][shown_index]}]
        val_items = items(val)
        for batch in bucket_batches([tuple(latents[i].shape[1:]) for i in val], self.batch_size, generator=None):
            self._val_batches.append({"latents": torch.stack([val_items["latents"][i] for i in batch]),
                                      "prompt_embeds": val_items["prompt_embeds"][batch],
                                      "pooled_prompt_embeds": val_items["pooled_prompt_embeds"][batch]})

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
