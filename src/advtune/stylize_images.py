"""Images in and out of ``advtune stylize``: reading any photo, writing outputs, the contact sheet.

Reading (:func:`read_image`): the EXIF orientation is applied (a phone photo comes out the way it
is shown); greyscale, palette, CMYK and 16-bit images become RGB; an alpha channel is kept aside
and given back to the output, and the colour under transparent pixels (often black) is replaced
by the mean visible colour, so the network does not smear a black halo into the visible edges.

Writing (:func:`save_output`): PNG (lossless, keeps the alpha), written to a temporary name and
renamed, with a text chunk ``advtune-stylize`` holding a fingerprint of what made it (model,
style, content, settings). That chunk is how a re-run knows an output is up to date, and how a
folder that holds earlier outputs is not stylized again (:func:`list_content_files`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps
from PIL.PngImagePlugin import PngInfo
from torch import Tensor

from advtune.config import ConfigError

__all__ = ["IMAGE_SUFFIXES", "FINGERPRINT_KEY", "LoadedImage", "read_image", "fingerprint_of", "file_digest",
           "list_content_files", "output_paths", "check_outputs_are_ours", "resize_short_side", "save_output",
           "thumbnail", "save_contact_sheet"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
FINGERPRINT_KEY = "advtune-stylize"
_SHEET_COLUMNS = ("content", "style", "output")


class LoadedImage(NamedTuple):
    """``rgb`` ``(1, 3, H, W)`` in [-1, 1]; ``alpha`` ``(H, W)`` uint8 or ``None`` (no transparency)."""

    rgb: Tensor
    alpha: np.ndarray | None


def _grey_from_wide(image: Image.Image) -> np.ndarray:
    """16-bit / 32-bit / float single-channel images → ``(H, W)`` float in [0, 1]."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        return np.clip(values, 0.0, 1.0)
    peak = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
    return np.clip(values / peak, 0.0, 1.0)


def read_image(path: str | Path) -> LoadedImage:
    """Read one image file (see module docstring); any failure raises (PIL's own errors, ValueError)."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)  # also decodes the whole file: a truncated one fails here
    if image.width < 1 or image.height < 1:
        raise ValueError("the image is empty")
    alpha = None
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        rgb = np.repeat(_grey_from_wide(image)[..., None], 3, axis=-1)
    elif image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0
        rgb, alpha = rgba[..., :3], rgba[..., 3]
        if alpha.min() >= 1.0:
            alpha = None
        else:
            visible = alpha > 0
            mean = rgb[visible].mean(axis=0) if visible.any() else np.full(3, 0.5)
            rgb = alpha[..., None] * rgb + (1.0 - alpha[..., None]) * mean
            alpha = np.round(alpha * 255.0).astype(np.uint8)
    else:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    tensor = torch.from_numpy(rgb.astype(np.float32) * 2.0 - 1.0).permute(2, 0, 1).unsqueeze(0).contiguous()
    return LoadedImage(tensor, alpha)


def resize_short_side(image: Tensor, short_side: int) -> Tensor:
    """``(1, 3, H, W)`` in [-1, 1] resized (Lanczos, aspect kept) so its shorter side is ``short_side``."""
    height, width = image.shape[-2:]
    scale = short_side / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(_to_uint8(image)).resize(size, Image.Resampling.LANCZOS)
    pixels = np.asarray(resized, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).contiguous()


def fingerprint_of(path: str | Path) -> str | None:
    """The ``advtune-stylize`` fingerprint stored in a PNG, or ``None`` (not ours, not a PNG, unreadable)."""
    try:
        with Image.open(path) as image:
            return image.text.get(FINGERPRINT_KEY) if image.format == "PNG" else None
    except (OSError, ValueError, SyntaxError):
        return None


def list_content_files(content: Path, exclude: tuple[Path, ...] = ()) -> list[Path]:
    """``content`` itself, or the image files directly inside the folder ``content`` (sorted by name).

    Hidden files, files with other suffixes, outputs of an earlier ``advtune stylize`` (they carry
    its fingerprint) and ``exclude`` (the style image) are left out of a folder; sub-folders are
    not searched.
    """
    if content.is_file():
        return [content]
    excluded = {path.resolve() for path in exclude}
    return [path for path in sorted(content.iterdir())
            if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES
            and path.resolve() not in excluded and fingerprint_of(path) is None]


def file_digest(paths: list[Path]) -> str:
    """SHA-256 of the files' bytes, in order (hex)."""
    hasher = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
    return hasher.hexdigest()


def output_paths(files: list[Path], style: Path, out_dir: Path) -> list[Path]:
    """``<stem>_<style stem>.png``; inputs that share a stem keep their suffix in the name."""
    stems = [path.stem for path in files]
    return [out_dir / f"{path.stem if stems.count(path.stem) == 1 else path.name}_{style.stem}.png"
            for path in files]


def check_outputs_are_ours(outputs: list[Path]) -> None:
    """Refuse, in one line, when an output path holds a file ``advtune stylize`` did not write."""
    foreign = [path for path in outputs if path.exists() and fingerprint_of(path) is None]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise ConfigError(f"stylize: {foreign[0]}{more} exists and was not written by advtune stylize; "
                          "it is left alone: choose another out_dir or move it")


def _to_uint8(image: Tensor) -> np.ndarray:
    """``(1 or none, 3, H, W)`` in [-1, 1] → ``(H, W, 3)`` uint8."""
    pixels = ((image.detach().float().cpu().reshape(3, *image.shape[-2:]).clamp(-1, 1) + 1) * 127.5).round()
    return pixels.to(torch.uint8).permute(1, 2, 0).numpy()


def save_output(image: Tensor, alpha: np.ndarray | None, path: Path, fingerprint: str) -> Image.Image:
    """Write ``image`` ``(1, 3, H, W)`` (plus ``alpha``) as a PNG with its fingerprint; return the PIL image."""
    pil = Image.fromarray(_to_uint8(image))
    if alpha is not None:
        pil.putalpha(Image.fromarray(alpha))
    info = PngInfo()
    info.add_text(FINGERPRINT_KEY, fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        pil.save(temporary, format="PNG", pnginfo=info)
        os.replace(temporary, path)  # a re-run never finds a half-written output under the final name
    finally:
        temporary.unlink(missing_ok=True)
    return pil


def thumbnail(image: Image.Image | Tensor, height: int) -> Image.Image:
    """An RGB copy scaled (Lanczos) to ``height`` pixels high, aspect kept; transparency shown on white."""
    if isinstance(image, Tensor):
        image = Image.fromarray(_to_uint8(image))
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        page = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(page, image.convert("RGBA"))
    image = image.convert("RGB")
    width = max(1, round(image.width * height / image.height))
    return image.resize((width, height), Image.Resampling.LANCZOS)


def save_contact_sheet(rows: list[tuple[str, Image.Image, Image.Image, Image.Image]], path: Path,
                       gap: int = 8, label_height: int = 14) -> Path:
    """One row per image: content | style | output thumbnails (same height), the file name above.

    ``rows``: ``(name, content, style, output)`` thumbnails from :func:`thumbnail`. The sheet
    carries the ``advtune-stylize`` text chunk too, so it is never taken for a content image.
    """
    if not rows:
        raise ValueError("save_contact_sheet: no rows")
    widths = [max(row[1 + column].width for row in rows) for column in range(3)]
    row_height = max(row[1].height for row in rows) + label_height
    width = sum(widths) + gap * 4
    height = gap + len(rows) * (row_height + gap) + label_height
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    left = gap
    for column, column_width in zip(_SHEET_COLUMNS, widths):
        draw.text((left, 2), column, fill=(0, 0, 0))
        left += column_width + gap
    top = gap + label_height
    for name, *images in rows:
        draw.text((gap, top), name, fill=(90, 90, 90))
        left = gap
        for image, column_width in zip(images, widths):
            sheet.paste(image, (left, top + label_height))
            left += column_width + gap
        top += row_height + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    info = PngInfo()
    info.add_text(FINGERPRINT_KEY, "contact sheet")
    sheet.save(temporary, format="PNG", pnginfo=info)
    os.replace(temporary, path)
    return path
