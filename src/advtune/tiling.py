"""Run an image-to-image network on an image of any size: whole, or in overlapping tiles blended without seams.

A fully convolutional network accepts any size, but its activations grow with the image (a 12 MP
photo through a 16-channel first layer is 0.8 GB per activation). :func:`apply_tiled` bounds the
memory: the image is cut into tiles of at most ``tile_size`` pixels a side that share at least
``overlap`` pixels with their neighbours, each tile goes through the network alone, and the
outputs are averaged with weights normalised by their sum (so any number of overlapping tiles
blends correctly)::

    y(p) = Σ_t w_t(p)·f(x_t)(p) / Σ_t w_t(p),   w_t(p) = r_t(row)·r_t(col)
    r(d) = clamp((d + ½ − overlap/4) / (overlap/2), 0, 1)   d: distance to an edge shared with a neighbour

Two things make seams, and each has its part of the overlap. Near a tile's edge the network sees
zero padding instead of the image (less context, border artefacts): the outer quarter of the
overlap on each side gets weight 0, so those pixels come from the neighbour only (Real-ESRGAN's
``tile_pad`` does the same by cropping). Statistics that depend on the tile (GroupNorm,
InstanceNorm) make neighbouring tiles disagree slightly: the middle half of the overlap cross-fades
linearly, which turns a step into a smooth blend (the "feathering" of tiled VAE decoding, as in
diffusers' ``AutoencoderKL.tiled_decode``). Where two tiles overlap by exactly ``overlap`` the two
weights sum to 1. Tiles start at multiples of ``multiple`` (the network's downsampling factor), so
neighbouring tiles share the same latent grid. The image is padded on the bottom and right
(reflection) to a multiple of ``multiple`` and the output cropped back.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["apply_tiled", "tile_borders", "tile_grid", "tile_starts", "edge_ramp", "pad_to_multiple", "seam_ratio"]


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap`` shared pixels.

    ``n = ceil((length − overlap) / (tile − overlap))`` tiles, spread evenly, each start rounded
    down to a multiple of ``multiple``; the last tile ends at ``length``. ``length`` and ``tile``
    must be multiples of ``multiple``; a ``length <= tile`` is one tile at 0.
    """
    if tile < 1 or overlap < 0 or overlap >= tile or multiple < 1:
        raise ValueError(f"tile_starts: need tile >= 1, 0 <= overlap < tile and multiple >= 1, "
                         f"got tile={tile}, overlap={overlap}, multiple={multiple}")
    if length % multiple or tile % multiple:
        raise ValueError(f"tile_starts: length {length} and tile {tile} must be multiples of {multiple}")
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    span = length - tile
    starts = [(round(i * span / (count - 1)) // multiple) * multiple for i in range(count)]
    starts[-1] = span
    return sorted(set(starts))


def edge_ramp(size: int, overlap: int, shared_start: bool, shared_end: bool) -> Tensor:
    """1-D weights ``(size,)``: ``r(d)`` (module docstring) of the distance ``d`` to each shared edge, 1 elsewhere."""
    weights = torch.ones(size)
    if overlap > 0:
        distance = torch.arange(size, dtype=torch.float32) + 0.5
        rising = ((distance - overlap / 4) / (overlap / 2)).clamp(0.0, 1.0)
        if shared_start:
            weights = torch.minimum(weights, rising)
        if shared_end:
            weights = torch.minimum(weights, rising.flip(0))
    return weights


def pad_to_multiple(image: Tensor, multiple: int) -> Tensor:
    """Pad ``(..., H, W)`` on the bottom and right (reflection) to sides that are multiples of ``multiple``."""
    height, width = image.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if not pad_h and not pad_w:
        return image
    # Reflection needs a pad smaller than the side; tiny images fall back to repeating the edge.
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(image, (0, pad_w, 0, pad_h), mode=mode)


def tile_grid(length: int, tile: int, overlap: int, multiple: int = 1) -> tuple[int, list[int]]:
    """Tile side and start offsets :func:`apply_tiled` uses along one padded side of ``length``.

    The side is the smallest (<= ``tile``) that covers ``length`` with as few tiles as ``tile``
    would: 3 tiles of 1,024 over 2,048 pixels would overlap by 512; 3 of 768 do it with 128.
    A ``length <= tile`` is one tile, the whole side.
    """
    if length <= tile:
        return length, [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    side = min(tile, math.ceil((length + (count - 1) * overlap) / count / multiple) * multiple)
    return side, tile_starts(length, side, overlap, multiple)


def apply_tiled(
    network: Callable[[Tensor], Tensor],
    image: Tensor,
    tile_size: int,
    overlap: int,
    multiple: int = 1,
    on_tile: Callable[[int, int], None] | None = None,
) -> Tensor:
    """``network`` applied to ``image`` ``(1, C, H, W)`` → ``(1, C', H, W)``, whole or in blended tiles.

    Args:
        network: maps ``(1, C, h, w)`` (``h, w`` multiples of ``multiple``) to ``(1, C', h, w)``.
        image: one image; any ``H, W >= 1``.
        tile_size: largest tile side (rounded down to a multiple of ``multiple``); an image whose
            padded sides both fit is processed whole, in one call. Tiles are shrunk to the smallest
            side that needs no more of them, so overlaps stay near ``overlap``.
        overlap: pixels shared by neighbouring tiles (rounded up to a multiple of ``multiple``):
            its outer quarters are discarded, its middle half cross-fades.
        multiple: the network's size constraint (its downsampling factor).
        on_tile: called as ``on_tile(done, total)`` after each tile (progress).
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"apply_tiled: image must be (1, C, H, W), got {tuple(image.shape)}")
    tile = (int(tile_size) // multiple) * multiple
    overlap = math.ceil(int(overlap) / multiple) * multiple
    if tile < multiple or not 0 <= overlap < tile:
        raise ValueError(f"apply_tiled: need tile_size >= {multiple} and 0 <= overlap < tile_size, "
                         f"got tile_size={tile_size}, overlap={overlap}")
    height, width = image.shape[-2:]
    padded = pad_to_multiple(image, multiple)
    full_h, full_w = padded.shape[-2:]
    tile_h, rows = tile_grid(full_h, tile, overlap, multiple)
    tile_w, cols = tile_grid(full_w, tile, overlap, multiple)
    total = len(rows) * len(cols)
    if total == 1:
        output = network(padded)
        if on_tile is not None:
            on_tile(1, 1)
        return output[..., :height, :width]
    accumulated: Tensor | None = None
    weight_sum = torch.zeros(1, 1, full_h, full_w, dtype=torch.float32, device=image.device)
    done = 0
    for top in rows:
        ramp_y = edge_ramp(tile_h, overlap, top > 0, top + tile_h < full_h)
        for left in cols:
            ramp_x = edge_ramp(tile_w, overlap, left > 0, left + tile_w < full_w)
            weight = (ramp_y[:, None] * ramp_x[None, :]).to(image.device)[None, None]
            out = network(padded[..., top : top + tile_h, left : left + tile_w]).float()
            if accumulated is None:
                accumulated = torch.zeros(1, out.shape[1], full_h, full_w, dtype=torch.float32, device=image.device)
            accumulated[..., top : top + tile_h, left : left + tile_w] += weight * out
            weight_sum[..., top : top + tile_h, left : left + tile_w] += weight
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    return (accumulated / weight_sum)[..., :height, :width]


def tile_borders(length: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Where :func:`apply_tiled`'s tiles begin or end inside a padded side of ``length``: where a seam would show."""
    side, starts = tile_grid(length, tile, overlap, multiple)
    return sorted({edge for start in starts for edge in (start, start + side)} - {0, length})


def seam_ratio(image: Tensor, rows: list[int], cols: list[int]) -> float:
    """How much sharper the image changes across the given borders than anywhere: ``(C, H, W)`` → ratio.

    The mean absolute difference between neighbouring pixels across the rows ``rows`` (between
    row ``r − 1`` and ``r``) and columns ``cols``, over the same mean taken across every row and
    column of the image. About 1: the borders do not stand out; a visible seam is well above 1.
    """
    image = image.float()
    vertical = (image[..., 1:, :] - image[..., :-1, :]).abs()  # between row r-1 and r at index r-1
    horizontal = (image[..., :, 1:] - image[..., :, :-1]).abs()
    at_rows = [vertical[..., r - 1, :].mean() for r in rows if 0 < r < image.shape[-2]]
    at_cols = [horizontal[..., :, c - 1].mean() for c in cols if 0 < c < image.shape[-1]]
    if not at_rows and not at_cols:
        raise ValueError("seam_ratio: no border inside the image")
    border = torch.stack(at_rows + at_cols).mean()
    overall = torch.cat([vertical.flatten(), horizontal.flatten()]).mean()
    return float(border / overall.clamp_min(1e-12))
