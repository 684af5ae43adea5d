"""LightningDataModules of the VQ autoencoder and style-transfer jobs, on bundled images.

Photos (content) and textures (styles) come from :mod:`advtune.data.bundled_images`: nothing is
downloaded, patch positions are fixed by ``seed`` and the validation patches come from a strip of
each image that no training patch overlaps. The training loaders are
:class:`~advtune.data.loader.ResumableDataLoader`: their order is fixed by ``(seed, epoch)`` and a
resumed run continues mid-epoch.
"""

from __future__ import annotations

from typing import Sequence

import lightning
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from advtune.checks import check_loader_settings
from advtune.data.bundled_images import (
    BUNDLED_IMAGES,
    CONTENT_IMAGES,
    STYLE_IMAGES,
    PatchDataset,
    load_bundled_image,
    patch_coordinates,
)
from advtune.data.loader import ResumableDataLoader

__all__ = ["ImagePatchDataModule", "StyleTransferDataModule"]


class _PairedStyleDataset(Dataset):
    """``{"content", "style", "style_image"}`` items: content patch ``i`` with style patch ``pairing[i]``."""

    def __init__(self, content: PatchDataset, style: PatchDataset, pairing: np.ndarray) -> None:
        self.content, self.style, self.pairing = content, style, pairing

    def __len__(self) -> int:
        return len(self.content)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        style_index = int(self.pairing[index])
        return {"content": self.content[index], "style": self.style[style_index],
                "style_image": torch.tensor(int(self.style.coordinates[style_index, 0]))}


class _ImageDictDataset(Dataset):
    def __init__(self, patches: PatchDataset) -> None:
        self.patches = patches

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"image": self.patches[index]}


def _check_names(names: Sequence[str] | None, default: tuple[str, ...], where: str) -> list[str]:
    names = list(default if names is None else names)
    if not names:
        raise ValueError(f"{where}: give at least one image name")
    for name in names:
        if name not in BUNDLED_IMAGES:
            raise ValueError(f"{where}: unknown image {name!r}; bundled images: {', '.join(sorted(BUNDLED_IMAGES))}")
    return names


def _patches(images: list[Tensor], patch_size: int, split: str, count: int,
             val_fraction: float, seed: int) -> PatchDataset:
    sizes = [(int(image.shape[1]), int(image.shape[2])) for image in images]
    return PatchDataset(images, patch_coordinates(sizes, patch_size, split, count, val_fraction, seed), patch_size)


def _loader_kwargs(batch_size: int, num_workers: int, seed: int) -> dict:
    check_loader_settings("data", batch_size, num_workers, seed)
    return {"batch_size": int(batch_size), "num_workers": int(num_workers)}


class _SplitDataModule(lightning.LightningDataModule):
    """Loaders over ``self.datasets["train"|"val"]`` built by a subclass's ``setup``."""

    datasets: dict[str, Dataset]
    loader_kwargs: dict
    seed: int

    def train_dataloader(self) -> ResumableDataLoader:
        self.setup()
        # Seeded per-epoch order that resumes mid-epoch (exact resume of a Lightning run).
        return ResumableDataLoader(self.datasets["train"], shuffle=True, seed=self.seed, drop_last=True,
                                   **self.loader_kwargs)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self.datasets["val"], shuffle=False, **self.loader_kwargs)


class ImagePatchDataModule(_SplitDataModule):
    """Photo patches for the VQ autoencoder; batches are ``{"image": (B, 3, p, p)}`` in [-1, 1].

    Args:
        images: names from :data:`BUNDLED_IMAGES` (default :data:`CONTENT_IMAGES`).
        patch_size: side of the square patches (a multiple of the autoencoder's downsampling).
        short_side: every image is first resized to this short side.
        patches_per_image: training patches per image (fixed positions for a given ``seed``).
        val_patches_per_image: validation patches per image.
        val_fraction: height fraction of each image kept for validation (bottom strip).
        batch_size: patches per batch.
        num_workers: DataLoader workers.
        seed: seed of the patch positions and of the training shuffle.
    """

    def __init__(self, images: Sequence[str] | None = None, patch_size: int = 64, short_side: int = 256,
                 patches_per_image: int = 256, val_patches_per_image: int = 8, val_fraction: float = 0.25,
                 batch_size: int = 8, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.images = _check_names(images, CONTENT_IMAGES, "ImagePatchDataModule")
        self.loader_kwargs = _loader_kwargs(batch_size, num_workers, seed)
        self.batch_size = int(batch_size)
        self.patch_size, self.short_side, self.seed = int(patch_size), int(short_side), int(seed)
        self.counts = {"train": int(patches_per_image), "val": int(val_patches_per_image)}
        self.val_fraction = float(val_fraction)
        self.datasets: dict[str, _ImageDictDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        """Load the images and fix the patch positions (once)."""
        if self.datasets:
            return
        images = [load_bundled_image(name, self.short_side) for name in self.images]
        for split in ("train", "val"):
            self.datasets[split] = _ImageDictDataset(_patches(
                images, self.patch_size, split, self.counts[split], self.val_fraction, self.seed))



class StyleTransferDataModule(_SplitDataModule):
    """Content photo patches paired with style texture patches.

    Batches are ``{"content": (B, 3, p, p), "style": (B, 3, p, p), "style_image": (B,)}`` (values
    in [-1, 1]; ``style_image`` indexes ``style_images``). Each content patch is paired with one
    style patch, fixed by ``seed`` for training and round-robin over the styles for validation.

    Args:
        content_images: default :data:`CONTENT_IMAGES`.
        style_images: default :data:`STYLE_IMAGES`.
        patch_size, patches_per_image, val_patches_per_image, val_fraction, batch_size,
            num_workers, seed: as :class:`ImagePatchDataModule`.
        content_short_side: short side the content photos are resized to.
        style_short_side: short side the style textures are resized to.
    """

    def __init__(self, content_images: Sequence[str] | None = None, style_images: Sequence[str] | None = None,
                 patch_size: int = 64, content_short_side: int = 256, style_short_side: int = 256,
                 patches_per_image: int = 256, val_patches_per_image: int = 8, val_fraction: float = 0.25,
                 batch_size: int = 8, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.content_images = _check_names(content_images, CONTENT_IMAGES, "StyleTransferDataModule")
        self.style_images = _check_names(style_images, STYLE_IMAGES, "StyleTransferDataModule")
        self.loader_kwargs = _loader_kwargs(batch_size, num_workers, seed)
        self.batch_size = int(batch_size)
        self.patch_size, self.seed = int(patch_size), int(seed)
        self.short_sides = {"content": int(content_short_side), "style": int(style_short_side)}
        self.counts = {"train": int(patches_per_image), "val": int(val_patches_per_image)}
        self.val_fraction = float(val_fraction)
        self.datasets: dict[str, _PairedStyleDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        """Load the images, fix the patch positions and the content/style pairing (once)."""
        if self.datasets:
            return
        content_images = [load_bundled_image(name, self.short_sides["content"]) for name in self.content_images]
        style_images = [load_bundled_image(name, self.short_sides["style"]) for name in self.style_images]
        for split in ("train", "val"):
            content = _patches(content_images, self.patch_size, split, self.counts[split], self.val_fraction,
                               self.seed)
            # A different seed for the styles, so their positions are not those of the photos.
            style = _patches(style_images, self.patch_size, split, self.counts[split], self.val_fraction,
                             self.seed + 1)
            if split == "train":
                pairing = np.random.default_rng(self.seed + 2).integers(0, len(style), size=len(content))
            else:
                pairing = np.arange(len(content)) % len(style)
            self.datasets[split] = _PairedStyleDataset(content, style, pairing)

