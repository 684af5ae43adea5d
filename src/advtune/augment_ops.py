"""The differentiable ops behind :mod:`advtune.augment`: DiffAugment's laws and ADA's non-leaking laws.

Every op maps ``(B, C, H, W) -> (B, C, H, W)`` with one random draw per sample and is differentiable
in its input (twice: R1 differentiates through it). Two families:

* **DiffAugment** (Zhao et al. 2020), applied to every sample: brightness ``+ U[-0.5, 0.5)``,
  saturation ``× U[0, 2)`` around the channel mean, contrast ``× U[0.5, 1.5)`` around the sample
  mean, translation by up to 1/8 of each side and cutout of a square of half the side.
* **ADA** (Karras et al. 2020, ``training/augment.py`` of StyleGAN2-ADA): ``op(x, apply)`` with
  ``apply`` a ``(B,)`` bool mask (drawn with probability ``p`` by the caller). Where applied, each
  op draws its parameter from a law that holds the identity as one outcome or as the centre of a
  distribution with an everywhere-positive characteristic function, so that ``x ↦ E[A(x)]`` stays
  invertible for every ``p < 1`` — the augmentation does not leak into the generator:

  ==============  ========================================================================
  ``xflip``       flip with probability 1/2 (so a flip with ``p/2`` overall)
  ``rotate90``    ``k ~ U{0, 1, 2, 3}`` quarter turns (a non-zero turn with ``3p/4``); when
                  ``H != W`` only ``k ∈ {0, 2}`` keeps the shape (a half turn with ``p/2``)
  ``translation`` integer shift ``U{-m..m}`` per axis, ``m`` = 1/8 of the side, zero fill
  ``brightness``  ``x + b``, ``b ~ N(0, 0.2²)``
  ``contrast``    ``x · c``, ``log2 c ~ N(0, 0.5²)`` (``c`` log-normal, ``σ = 0.5 ln 2``)
  ``saturation``  ``μ + (x − μ) · s`` with ``μ`` the channel mean, ``log2 s ~ N(0, 1)``
  ``cutout``      zero a square of half the side at a uniform centre
  ==============  ========================================================================

  A uniform law (DiffAugment's brightness) instead has a characteristic function with zeros: at
  ``p ≈ 0.82`` the mixture ``(1 − p) + p · sinc`` vanishes at some frequency and ``E[A(x)]`` loses
  it. Translation pads with zeros (ADA reflects): mid-grey for images in [-1, 1], the mean of
  normalised latents.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ADA_OPS", "DIFFAUGMENT_OPS", "ada_op", "diffaugment_op"]

AdaOp = Callable[[Tensor, Tensor], Tensor]

# StyleGAN2-ADA's defaults (AugmentPipe: brightness_std, contrast_std, saturation_std in log2 units).
BRIGHTNESS_STD = 0.2
CONTRAST_LOG2_STD = 0.5
SATURATION_LOG2_STD = 1.0


def _per_sample(values: Tensor) -> Tensor:
    return values.reshape(-1, 1, 1, 1)


def _uniform(x: Tensor, low: float, high: float) -> Tensor:
    """One value per sample, ``(B, 1, 1, 1)``, uniform in ``[low, high)``."""
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) * (high - low) + low


def _log2_normal(x: Tensor, log2_std: float, apply: Tensor) -> Tensor:
    """``2^N(0, log2_std²)`` per sample where ``apply``, else 1; ``(B, 1, 1, 1)``."""
    factor = torch.exp2(torch.randn(x.shape[0], device=x.device, dtype=x.dtype) * log2_std)
    return _per_sample(torch.where(apply, factor, torch.ones_like(factor)))


def _saturate(x: Tensor, factor: Tensor) -> Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * factor + mean


def _translate(x: Tensor, apply: Tensor | None = None, ratio: float = 0.125) -> Tensor:
    """Integer shift by up to ``ratio`` of each side, per sample, zero fill (no shift where not ``apply``)."""
    batch, _, height, width = x.shape
    max_dy, max_dx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (batch, 1, 1), device=x.device)
    dx = torch.randint(-max_dx, max_dx + 1, (batch, 1, 1), device=x.device)
    if apply is not None:
        dy, dx = dy * apply.reshape(-1, 1, 1), dx * apply.reshape(-1, 1, 1)
    padded = F.pad(x, (max_dx, max_dx, max_dy, max_dy))
    # Output pixel (i, j) reads padded pixel (i + max_dy - dy, j + max_dx - dx): a shift by (dy, dx).
    rows = torch.arange(height, device=x.device).reshape(1, -1, 1) + max_dy - dy
    cols = torch.arange(width, device=x.device).reshape(1, 1, -1) + max_dx - dx
    samples = torch.arange(batch, device=x.device).reshape(-1, 1, 1)
    return padded.permute(0, 2, 3, 1)[samples, rows, cols].permute(0, 3, 1, 2)


def _cut_out(x: Tensor, apply: Tensor | None = None, ratio: float = 0.5) -> Tensor:
    """Zero a square of ``ratio`` of each side at a random centre, per sample (DeVries & Taylor 2017)."""
    batch, _, height, width = x.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    cy = torch.randint(0, height + (1 - size_y % 2), (batch, 1, 1), device=x.device)
    cx = torch.randint(0, width + (1 - size_x % 2), (batch, 1, 1), device=x.device)
    rows = torch.arange(height, device=x.device).reshape(1, -1, 1) - (cy - size_y // 2)
    cols = torch.arange(width, device=x.device).reshape(1, 1, -1) - (cx - size_x // 2)
    inside = (rows >= 0) & (rows < size_y) & (cols >= 0) & (cols < size_x)
    if apply is not None:
        inside = inside & apply.reshape(-1, 1, 1)
    return x * (~inside).unsqueeze(1).to(x.dtype)


# ---- DiffAugment: every op on every sample ----------------------------------------------------
def _diffaugment_contrast(x: Tensor) -> Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(x, 0.5, 1.5) + mean


_DIFFAUGMENT: dict[str, Callable[[Tensor], Tensor]] = {
    "brightness": lambda x: x + _uniform(x, -0.5, 0.5),
    "saturation": lambda x: _saturate(x, _uniform(x, 0.0, 2.0)),
    "contrast": _diffaugment_contrast,
    "translation": _translate,
    "cutout": _cut_out,
}
DIFFAUGMENT_OPS: tuple[str, ...] = tuple(_DIFFAUGMENT)


# ---- ADA: op(x, apply) with the identity among the outcomes --------------------------------------
def _ada_xflip(x: Tensor, apply: Tensor) -> Tensor:
    flip = apply & (torch.rand(x.shape[0], device=x.device) < 0.5)
    return torch.where(_per_sample(flip), x.flip(3), x)


def _ada_rotate90(x: Tensor, apply: Tensor) -> Tensor:
    if x.shape[2] != x.shape[3]:  # only the half turn keeps the shape: k in {0, 2}
        half = apply & (torch.rand(x.shape[0], device=x.device) < 0.5)
        return torch.where(_per_sample(half), x.flip(2, 3), x)
    turns = _per_sample(torch.randint(0, 4, (x.shape[0],), device=x.device) * apply)
    out = x
    for k in (1, 2, 3):
        out = torch.where(turns == k, torch.rot90(x, k, dims=(2, 3)), out)
    return out


def _ada_brightness(x: Tensor, apply: Tensor) -> Tensor:
    offset = torch.randn(x.shape[0], device=x.device, dtype=x.dtype) * BRIGHTNESS_STD
    return x + _per_sample(offset * apply.to(x.dtype))


_ADA: dict[str, AdaOp] = {
    "xflip": _ada_xflip,
    "rotate90": _ada_rotate90,
    "translation": _translate,
    "brightness": _ada_brightness,
    "contrast": lambda x, apply: x * _log2_normal(x, CONTRAST_LOG2_STD, apply),
    "saturation": lambda x, apply: _saturate(x, _log2_normal(x, SATURATION_LOG2_STD, apply)),
    "cutout": _cut_out,
}
ADA_OPS: tuple[str, ...] = tuple(_ADA)


def ada_op(name: str) -> AdaOp:
    """ADA's op ``name`` (one of ``ADA_OPS``): ``(x (B, C, H, W), apply (B,) bool) -> (B, C, H, W)``."""
    if name not in _ADA:
        raise ValueError(f"unknown augment op {name!r}; valid: {', '.join(ADA_OPS)}")
    return _ADA[name]


def diffaugment_op(name: str) -> Callable[[Tensor], Tensor]:
    """DiffAugment's op ``name`` (one of ``DIFFAUGMENT_OPS``): ``(B, C, H, W) -> (B, C, H, W)``, every sample."""
    if name not in _DIFFAUGMENT:
        raise ValueError(f"unknown DiffAugment op {name!r}; valid: {', '.join(DIFFAUGMENT_OPS)}")
    return _DIFFAUGMENT[name]
