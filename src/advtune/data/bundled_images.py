"""Image patches cut from photos and textures that ship inside scikit-learn and scikit-image.

Nothing is downloaded: each image is read with Pillow straight from the package's own data folder
(``sklearn/datasets/images`` and ``skimage/data``), never through scikit-image's fetchers, which
would reach for the network (pooch) for the images a wheel does not bundle. Only the names in
:data:`BUNDLED_IMAGES` (all bundled by scikit-image 0.26 and scikit-learn) are accepted.

Every image is converted to RGB (grey textures are repeated over three channels), resized so its
short side is ``short_side`` pixels (so a 64×64 patch of a 256-pixel side shows a meaningful part of it) and scaled to
[-1, 1]. The bottom ``val_fraction`` of each image (at least one patch high) is the validation
region and the rest the training region: no validation patch overlaps a training patch, and every
image appears in both splits. Training patches sit at random positions fixed by ``seed``;
validation patches are evenly spaced along the validation strip (no randomness).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "BUNDLED_IMAGES",
    "CONTENT_IMAGES",
    "STYLE_IMAGES",
    "HELD_OUT_PHOTOS",
    "PatchDataset",
    "bundled_image_path",
    "load_bundled_image",
    "patch_coordinates",
]

# name -> (package, file inside the package's data folder)
BUNDLED_IMAGES: dict[str, tuple[str, str]] = {
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "astronaut": ("skimage", "data/astronaut.png"),
    "camera": ("skimage", "data/camera.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "coins": ("skimage", "data/coins.png"),
    "motorcycle": ("skimage", "data/motorcycle_left.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "retina": ("skimage", "data/retina.jpg"),
    "brick": ("skimage", "data/brick.png"),
    "grass": ("skimage", "data/grass.png"),
    "gravel": ("skimage", "data/gravel.png"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "immunohistochemistry": ("skimage", "data/ihc.png"),
}
CONTENT_IMAGES: tuple[str, ...] = ("china", "flower", "astronaut", "coffee", "chelsea", "rocket")
STYLE_IMAGES: tuple[str, ...] = ("brick", "grass", "gravel", "hubble_deep_field", "immunohistochemistry")
# Photos no shipped experiment trains on: the style job's results are shown and scored on these.
HELD_OUT_PHOTOS: tuple[str, ...] = ("motorcycle", "camera", "coins")


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"load_bundled_image: package {package!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def bundled_image_path(name: str) -> Path:
    """The file of a bundled image (inside the installed scikit-learn / scikit-image)."""
    if name not in BUNDLED_IMAGES:
        raise ValueError(f"unknown image {name!r}; bundled images: {', '.join(sorted(BUNDLED_IMAGES))}")
    package, relative = BUNDLED_IMAGES[name]
    path = _package_dir(package) / relative
    if not path.is_file():
        raise ValueError(f"image {name!r} is not bundled with the installed {package} (missing {path})")
    return path


def load_bundled_image(name: str, short_side: int | None = None) -> Tensor:
    """One bundled image as a float tensor ``(3, H, W)`` in [-1, 1].

    Args:
        name: a key of :data:`BUNDLED_IMAGES`.
        short_side: resize (Lanczos, aspect kept) so the shorter side has this many pixels;
            ``None`` keeps the original size.
    """
    with Image.open(bundled_image_path(name)) as image:
        image = image.convert("RGB")
        if short_side is not None:
            if short_side < 1:
                raise ValueError(f"short_side must be >= 1, got {short_side}")
            scale = short_side / min(image.size)
            size = (max(short_side, round(image.width * scale)), max(short_side, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.LANCZOS)
        pixels = np.asarray(image, dtype=np.float32)
    return torch.from_numpy(pixels / 127.5 - 1.0).permute(2, 0, 1).contiguous()


def patch_coordinates(
    image_sizes: Sequence[tuple[int, int]],
    patch_size: int,
    split: str,
    num_patches: int,
    val_fraction: float,
    seed: int,
) -> np.ndarray:
    """Top-left corners of patches, ``(N, 3)`` int64 rows ``(image, y, x)``.

    Training patches: ``num_patches`` per image at random positions of the training region.
    Validation patches: ``num_patches`` per image evenly spaced along the validation strip,
    ordered round-robin over the images (so the first rows cover every image).
    """
    if split not in ("train", "val"):
        raise ValueError(f"patch_coordinates: split must be 'train' or 'val', got {split!r}")
    if patch_size < 1:
        raise ValueError(f"data.patch_size must be >= 1, got {patch_size}")
    if not 0.0 < val_fraction < 1.0 or num_patches < 1:
        raise ValueError(f"patch_coordinates: need 0 < val_fraction < 1 and num_patches >= 1, got "
                         f"{val_fraction}, {num_patches}")
    rng = np.random.default_rng(seed)
    per_image = []
    for index, (height, width) in enumerate(image_sizes):
        val_height = max(patch_size, int(round(val_fraction * height)))
        train_height = height - val_height
        if train_height < patch_size or width < patch_size:
            raise ValueError(
                f"image {index} ({height}×{width}) is too small for {patch_size}-pixel patches with "
                f"val_fraction={val_fraction}; raise short_side"
            )
        if split == "train":
            ys = rng.integers(0, train_height - patch_size + 1, size=num_patches)
            xs = rng.integers(0, width - patch_size + 1, size=num_patches)
        else:
            ys = np.full(num_patches, train_height + (val_height - patch_size) // 2)
            xs = np.linspace(0, width - patch_size, num_patches).round().astype(np.int64)
        per_image.append(np.stack([np.full(num_patches, index), ys, xs], axis=1))
    stacked = np.stack(per_image, axis=1)  # (num_patches, num_images, 3): round-robin over images
    return stacked.reshape(-1, 3).astype(np.int64)


class PatchDataset(Dataset):
    """Patches ``(3, p, p)`` cropped on access from a few images held in memory.

    Args:
        images: ``(3, H_i, W_i)`` tensors.
        coordinates: ``(N, 3)`` rows ``(image, y, x)`` from :func:`patch_coordinates`.
        patch_size: side ``p`` of the square patches.
    """

    def __init__(self, images: Sequence[Tensor], coordinates: np.ndarray, patch_size: int) -> None:
        self.images = list(images)
        self.coordinates = np.asarray(coordinates, dtype=np.int64)
        self.patch_size = int(patch_size)

    def __len__(self) -> int:
        return len(self.coordinates)

    def __getitem__(self, index: int) -> Tensor:
        image, y, x = (int(v) for v in self.coordinates[index])
        return self.images[image][:, y : y + self.patch_size, x : x + self.patch_size]

