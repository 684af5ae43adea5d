"""scikit-learn's handwritten digits (1,797 images of 8×8) as tensors and a LightningDataModule.

The images ship inside scikit-learn (``sklearn.datasets.load_digits``), so nothing is downloaded.
Pixel values 0..16 are scaled to [-1, 1] (``x / 8 - 1``), the range of a ``tanh`` generator.

The train/validation split is stratified by class and fixed: for a given ``seed`` and
``val_fraction`` it is the same on every run and machine (NumPy's PCG64 stream is stable across
versions). Class filtering (``digits=[...]``) is applied *after* the split, so the validation images
of a digit are the same whether or not other digits are kept — the Flux demo trains a base on some
digits and adapts it to held-out ones, and compares both on the same validation images.
"""

from __future__ import annotations

import functools
from typing import Sequence

import lightning
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from advtune.checks import check_loader_settings
from advtune.data.loader import ResumableDataLoader

__all__ = ["load_digits_images", "DigitsDataset", "DigitsDataModule"]

_SPLITS = ("train", "val", "all")
_UPSCALE_MODES = ("nearest", "bilinear")


def _stratified_val_mask(labels: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of validation images: ``round(val_fraction * n_c)`` random images per class."""
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(labels), dtype=bool)
    for digit in np.unique(labels):
        indices = np.flatnonzero(labels == digit)
        num_val = int(round(val_fraction * len(indices)))
        is_val[rng.permutation(indices)[:num_val]] = True
    return is_val


def _check_digits(digits: Sequence[int] | None) -> list[int] | None:
    if digits is None:
        return None
    digits = [int(d) for d in digits]
    if not digits or any(d < 0 or d > 9 for d in digits):
        raise ValueError(f"digits must be a non-empty list of classes in 0..9, got {digits}")
    return digits


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits, parsed once per process (its CSV parse takes ~60 ms); read-only arrays."""
    from sklearn.datasets import load_digits  # lazy: sklearn takes a second to import

    bunch = load_digits()
    pixels, labels = np.asarray(bunch.images, dtype=np.float32), np.asarray(bunch.target, dtype=np.int64)
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def load_digits_images(
    split: str = "all",
    seed: int = 0,
    val_fraction: float = 0.2,
    digits: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load the digits as images in [-1, 1] with their labels.

    Args:
        split: ``"train"``, ``"val"`` or ``"all"``.
        seed: seed of the fixed stratified split.
        val_fraction: fraction of each class held out for validation, in (0, 1).
        digits: keep only these classes (``None`` keeps all ten).

    Returns:
        ``(images, labels)``: float32 ``(N, 1, 8, 8)`` in [-1, 1] and int64 ``(N,)``.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    digits = _check_digits(digits)

    pixels, labels = _digits_arrays()  # (1797, 8, 8) values 0..16, (1797,); read-only

    keep = np.ones(len(labels), dtype=bool)
    if split != "all":
        is_val = _stratified_val_mask(labels, val_fraction, seed)
        keep = is_val if split == "val" else ~is_val
    if digits is not None:
        keep &= np.isin(labels, digits)

    images = torch.from_numpy(pixels[keep] / 8.0 - 1.0).unsqueeze(1)
    return images.contiguous(), torch.from_numpy(labels[keep])


class DigitsDataset(Dataset):
    """Map-style dataset of ``{"image": (1, H, W) or (H*W,), "label": ()}`` dicts."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if len(images) != len(labels):
            raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) differ in length")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "label": self.labels[index]}


class DigitsDataModule(lightning.LightningDataModule):
    """The digits as a LightningDataModule; batches are ``{"image": (B, 1, 8, 8), "label": (B,)}``.

    Args:
        batch_size: images per batch.
        num_workers: DataLoader workers (0 is fastest for 1,797 tiny images).
        val_fraction: fraction of each class held out for validation.
        seed: seed of the fixed split and of the train loader's shuffling.
        digits: keep only these classes (``None`` keeps all).
        flatten: give images as ``(B, H*W)`` vectors instead of ``(B, 1, H, W)``.
        upscale: integer factor to enlarge images (2 gives 16×16), done once in ``setup``.
        upscale_mode: ``"nearest"`` or ``"bilinear"``; both keep values in [-1, 1].
    """

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.2,
        seed: int = 0,
        digits: Sequence[int] | None = None,
        flatten: bool = False,
        upscale: int = 1,
        upscale_mode: str = "nearest",
    ) -> None:
        super().__init__()
        check_loader_settings("data", batch_size, num_workers, seed)
        if int(upscale) != upscale or upscale < 1:
            raise ValueError(f"upscale must be an integer >= 1, got {upscale}")
        if upscale_mode not in _UPSCALE_MODES:
            raise ValueError(f"upscale_mode must be one of {_UPSCALE_MODES}, got {upscale_mode!r}")
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        self.digits = _check_digits(digits)
        self.flatten = bool(flatten)
        self.upscale = int(upscale)
        self.upscale_mode = upscale_mode
        self.train_dataset: DigitsDataset | None = None
        self.val_dataset: DigitsDataset | None = None

    def _prepare(self, split: str) -> DigitsDataset:
        images, labels = load_digits_images(split, self.seed, self.val_fraction, self.digits)
        if self.upscale > 1:
            kwargs = {"align_corners": False} if self.upscale_mode == "bilinear" else {}
            images = F.interpolate(images, scale_factor=self.upscale, mode=self.upscale_mode, **kwargs)
        if self.flatten:
            images = images.flatten(1)
        return DigitsDataset(images.contiguous(), labels)

    def setup(self, stage: str | None = None) -> None:
        """Build both datasets (cheap: the whole set is 460 kB)."""
        if self.train_dataset is None:
            self.train_dataset = self._prepare("train")
            self.val_dataset = self._prepare("val")

    def train_dataloader(self) -> DataLoader:
        self.setup()
        # Seeded per-epoch order that resumes mid-epoch (exact resume); drop_last because
        # BatchNorm1d in the tutorial generator fails on a batch of one.
        return ResumableDataLoader(
            self.train_dataset, batch_size=self.batch_size, shuffle=True, seed=self.seed,
            drop_last=True, num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        self.setup()
        # Even unshuffled, a DataLoader draws a worker base seed per iteration from its generator
        # (the global RNG when none is given): validating must not shift the training stream.
        return DataLoader(
            self.val_dataset,
            batch_size=self.batch_size,
            shuffle=False,
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.num_workers,
        )
