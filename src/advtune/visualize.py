"""Sample grids as PNG files, with PIL only (no torchvision).

``save_image_grid`` tiles a batch into one image; ``save_side_by_side`` puts several labelled grids
next to each other for before/after comparisons (base vs. fine-tuned, 1 vs. 8 sampling steps...).
Small images (8×8 digits) are enlarged with nearest-neighbour upscaling so pixels stay crisp. A grid
shows at most ``MAX_TILES`` images, separated by a light gap that stays visible on dark and bright
images alike; whoever needs every sample saves the array (``advtune sample`` writes a ``.npy``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["make_image_grid", "save_image_grid", "save_side_by_side", "MAX_TILES"]

MAX_TILES = 64  # a grid of more images is too small to look at; the first 64 are shown
_BACKGROUND = 255  # white page between panels and behind labels
_GAP_VALUE = 255  # white lines between tiles: digits and most samples have dark backgrounds
_MIN_TILE_PIXELS = 32  # automatic upscaling enlarges tiles to at least this size
_LABEL_HEIGHT = 14  # pixels of the text band above each panel (PIL's default font is ~11 px)


def make_image_grid(
    images: torch.Tensor, nrow: int | None = None, padding: int = 1, upscale: int = 1,
    max_tiles: int | None = MAX_TILES,
) -> np.ndarray:
    """Tile ``(B, C, H, W)`` images in [-1, 1] into one uint8 array ``(H', W', C)``.

    Args:
        images: a batch with C = 1 (grey) or 3 (RGB); values outside [-1, 1] are clipped.
        nrow: images per row (default: ``ceil(sqrt(B))``, a square-ish grid).
        padding: pixels of white gap around and between images (before upscaling).
        upscale: integer nearest-neighbour enlargement of the whole grid.
        max_tiles: only the first ``max_tiles`` images are tiled (``None``: all).

    Returns:
        ``(rows·(H+p)+p, nrow·(W+p)+p, C)`` uint8 array times ``upscale``, with
        ``B' = min(B, max_tiles)`` tiles.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"make_image_grid: images must be (B, 1 or 3, H, W), got {shape}")
    if len(images) == 0:
        raise ValueError("make_image_grid: images is an empty batch")
    if int(upscale) != upscale or upscale < 1:
        raise ValueError(f"make_image_grid: upscale must be an integer >= 1, got {upscale}")
    if max_tiles is not None:
        images = images[: int(max_tiles)]
    batch, channels, height, width = images.shape
    nrow = int(nrow) if nrow else math.ceil(math.sqrt(batch))
    if nrow < 1:
        raise ValueError(f"make_image_grid: nrow must be >= 1, got {nrow}")
    num_rows = math.ceil(batch / nrow)
    # [-1, 1] → [0, 255], rounded as torchvision/PIL do for saved images.
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    pixels = pixels.permute(0, 2, 3, 1).numpy()  # (B, H, W, C)

    grid = np.full(
        (num_rows * (height + padding) + padding, nrow * (width + padding) + padding, channels),
        _GAP_VALUE, dtype=np.uint8,
    )
    for index in range(batch):
        row, col = divmod(index, nrow)
        top, left = padding + row * (height + padding), padding + col * (width + padding)
        grid[top : top + height, left : left + width] = pixels[index]
    if upscale > 1:
        grid = grid.repeat(upscale, axis=0).repeat(upscale, axis=1)
    return grid


def _to_pil(array: np.ndarray):
    from PIL import Image

    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def save_image_grid(
    images: torch.Tensor,
    path: str | os.PathLike,
    nrow: int | None = None,
    upscale: int | None = None,
    padding: int = 1,
    max_tiles: int | None = MAX_TILES,
) -> Path:
    """Save ``(B, C, H, W)`` images in [-1, 1] as one PNG grid of at most ``max_tiles``; returns the path.

    See :func:`make_image_grid` for the arguments; ``upscale=None`` enlarges tiles to at least
    32 pixels (8×8 digits: ×4, 16×16: ×2, 32×32 and larger: ×1). Parent directories are created.
    """
    if upscale is None and isinstance(images, torch.Tensor) and images.ndim == 4:
        upscale = max(1, -(-_MIN_TILE_PIXELS // max(images.shape[-2:])))  # ceil division
    grid = make_image_grid(images, nrow=nrow, padding=padding, upscale=1 if upscale is None else upscale,
                           max_tiles=max_tiles)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _to_pil(grid).save(path)
    return path


def save_side_by_side(
    grids: dict[str, torch.Tensor],
    path: str | os.PathLike,
    nrow: int | None = None,
    upscale: int = 4,
    gap: int = 8,
) -> Path:
    """Save several labelled panels in one row of a PNG (before/after comparisons).

    Args:
        grids: label → a batch ``(B, C, H, W)`` in [-1, 1] (tiled with :func:`make_image_grid`)
            or one image ``(C, H, W)`` in [-1, 1]. Panels keep the dict's order.
        path: PNG to write; parent directories are created.
        nrow: images per row inside each panel (default: square-ish).
        upscale: nearest-neighbour enlargement of each panel.
        gap: white pixels between panels.

    Returns:
        The path written.
    """
    from PIL import Image, ImageDraw

    if not isinstance(grids, dict) or not grids:
        raise ValueError("save_side_by_side: grids must be a non-empty dict of label -> images")
    panels: list[tuple[str, np.ndarray]] = []
    for label, images in grids.items():
        if isinstance(images, torch.Tensor) and images.ndim == 3:
            images = images.unsqueeze(0)
        grid = make_image_grid(images, nrow=nrow, upscale=upscale)
        panels.append((str(label), grid if grid.shape[-1] == 3 else grid.repeat(3, axis=-1)))

    width = sum(grid.shape[1] for _, grid in panels) + gap * (len(panels) + 1)
    height = max(grid.shape[0] for _, grid in panels) + _LABEL_HEIGHT + 2 * gap
    canvas = Image.new("RGB", (width, height), (_BACKGROUND,) * 3)
    draw = ImageDraw.Draw(canvas)
    left = gap
    for label, grid in panels:
        draw.text((left, gap // 2), label, fill=(0, 0, 0))
        canvas.paste(Image.fromarray(grid), (left, gap + _LABEL_HEIGHT))
        left += grid.shape[1] + gap
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
