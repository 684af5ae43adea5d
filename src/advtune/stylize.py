"""``advtune stylize``: apply a trained style-transfer model to your own images, at their own resolution.

For each content image: read it (:mod:`advtune.stylize_images`), run ``y = G(Q(T(E(x), s)))`` over
it whole, or in overlapping tiles blended without seams when a side exceeds ``tile_size``
(:func:`advtune.tiling.apply_tiled`: memory stays bounded for a large photo), and write
``<out_dir>/<name>_<style>.png`` at the input's size, with its alpha. Then one contact sheet,
``contact_sheet_<style>.png``: content | style | output per row.

A re-run skips every output whose fingerprint (model files, style, content, settings) is unchanged,
and rewrites the ones it wrote earlier with other inputs; it never overwrites a file it did not
write. All content images are read once before the first is stylized, so an unreadable one is
named before any work (``skip_bad_files=true`` leaves such files out instead).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from advtune.commands import key_values
from advtune.config import ConfigError

__all__ = ["HELP", "DEFAULTS", "main", "parse_arguments"]

HELP = """usage: advtune stylize ckpt_path=PATH content=IMAGE_OR_FOLDER style=IMAGE [key=value ...]

Apply a model trained with `advtune train experiment=style_transfer` to your own images, at their
own resolution. Writes <out_dir>/<name>_<style>.png for every content image (PNG, same size, alpha
kept; greyscale comes out in colour) and <out_dir>/contact_sheet_<style>.png (content | style |
output). Re-running skips outputs that are up to date and never overwrites files it did not write.

  ckpt_path=PATH      the run's output_dir, its checkpoints/last.ckpt, or an exported style_transfer.pt
  content=PATH        an image, or a folder of images (not its sub-folders)
  style=IMAGE         the style reference image
  out_dir=stylized    where outputs and the contact sheet go (created)
  tile_size=1024      images with a side above this go through the model in overlapping tiles
                      (bounded memory, blended: no seams); 0 = always whole
  tile_overlap=128    pixels shared by neighbouring tiles (outer quarters discarded, middle blended)
  style_size=auto     short side the style image is resized to; auto: as in training
  skip_bad_files=false  true: leave unreadable content images out (with a warning) instead of stopping
  device=auto         auto: cuda when available, else cpu
  allowed_target_prefixes=   extra `_target_` prefixes a checkpoint's config may name

examples:
  advtune stylize ckpt_path=outputs/style_transfer content=photo.jpg style=starry.png
  advtune stylize ckpt_path=outputs/style_transfer content=holiday/ style=brick.png out_dir=holiday_brick"""

DEFAULTS: dict[str, Any] = {
    "ckpt_path": None, "content": None, "style": None, "out_dir": "stylized", "tile_size": 1024,
    "tile_overlap": 128, "style_size": "auto", "skip_bad_files": False, "device": "auto",
    "allowed_target_prefixes": "",
}
_SHEET_ROWS = 32  # rows of the contact sheet; more images are listed in the output folder only
_SHEET_HEIGHT = 256  # thumbnail height in the contact sheet


def _boolean(key: str, value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ConfigError(f"stylize: {key}={value!r} is not true or false")


def parse_arguments(overrides: list[str]) -> dict[str, Any]:
    """``key=value`` strings → checked arguments; a bad one raises :class:`ConfigError` (one line)."""
    args = dict(DEFAULTS)
    for key, value in key_values(overrides, DEFAULTS, "stylize: "):
        if key in ("tile_size", "tile_overlap") or (key == "style_size" and value != "auto"):
            try:
                args[key] = int(value)
            except ValueError:
                raise ConfigError(f"stylize: {key}={value!r} is not an integer") from None
        else:
            args[key] = _boolean(key, value) if key == "skip_bad_files" else value
    for key in ("ckpt_path", "content", "style"):
        if not args[key]:
            raise ConfigError(f"stylize: {key}=... is required (advtune stylize --help)")
    if args["tile_size"] < 0 or args["tile_overlap"] < 0:
        raise ConfigError("stylize: tile_size and tile_overlap must be >= 0")
    if args["tile_size"] and args["tile_overlap"] * 2 > args["tile_size"]:
        raise ConfigError(f"stylize: tile_overlap={args['tile_overlap']} must be at most half of "
                          f"tile_size={args['tile_size']}")
    from advtune.stylize_model import MIN_STYLE_SIDE

    if args["style_size"] != "auto" and args["style_size"] < MIN_STYLE_SIDE:
        raise ConfigError(f"stylize: style_size must be auto or >= {MIN_STYLE_SIDE}, got {args['style_size']}")
    for key in ("content", "style"):
        if not Path(args[key]).expanduser().exists():
            raise ConfigError(f"stylize: {key} not found: {args[key]}")
    if not Path(args["style"]).expanduser().is_file():
        raise ConfigError(f"stylize: style= must be one image file, got the folder {args['style']}")
    if Path(args["out_dir"]).expanduser().is_file():
        raise ConfigError(f"stylize: out_dir={args['out_dir']} is a file, not a folder")
    if args["device"] not in ("auto", "cpu") and not args["device"].startswith("cuda"):
        raise ConfigError(f"stylize: device must be auto, cpu or cuda[:N], got {args['device']!r}")
    return args


class _Progress:
    """One line per image on stderr, ``[i/N] name WxH: seconds → output``, with an ETA from the pixels left;
    on a terminal, the tile count of a tiled image updates in place."""

    def __init__(self, sizes: list[tuple[int, int]]) -> None:
        self.pixels_left = sum(h * w for h, w in sizes)
        self.total, self.index, self.done_pixels, self.seconds = len(sizes), 0, 0, 0.0
        self.interactive = sys.stderr.isatty()
        self.prefix = ""

    def start(self, name: str, height: int, width: int) -> None:
        self.index += 1
        self.prefix = f"[{self.index}/{self.total}] {name} {width}×{height}"
        self.began, self.pixels = time.perf_counter(), height * width

    def on_tile(self, done: int, total: int) -> None:
        if self.interactive and total > 1:
            print(f"\r{self.prefix}: tile {done}/{total}", end="", file=sys.stderr, flush=True)

    def finish(self, what: str, computed: bool) -> None:
        self.pixels_left -= self.pixels
        seconds = time.perf_counter() - self.began
        if computed:
            self.done_pixels, self.seconds = self.done_pixels + self.pixels, self.seconds + seconds
        eta = ""
        if self.pixels_left and self.done_pixels:
            eta = f", ~{self.seconds / self.done_pixels * self.pixels_left:.0f} s left"
        start = "\r\x1b[K" if self.interactive else ""  # over the tile counter, cleared to the line's end
        took = f"{seconds:.1f} s → " if computed else "up to date, "
        print(f"{start}{self.prefix}: {took}{what}{eta}", file=sys.stderr, flush=True)


def _scan(files: list[Path], skip_bad: bool, where: Path) -> list[tuple[Path, tuple[int, int]]]:
    """Read every content image once as stylizing will; name the broken ones before any work."""
    from advtune.stylize_images import read_image

    good, bad = [], []
    for path in files:
        try:
            good.append((path, tuple(read_image(path).rgb.shape[-2:])))
        except Exception as error:  # noqa: BLE001 - PIL raises many types for a broken file
            bad.append(f"{path.name} ({type(error).__name__}: {str(error).replace(str(path), path.name)[:120]})")
    if bad:
        counted = f"{len(bad)} of {len(files)} images in {where} cannot be read: {'; '.join(bad[:3])}"
        counted += f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
        if not skip_bad or not good:
            raise ConfigError(f"stylize: {counted}" + ("" if skip_bad else "; fix or remove them, or give "
                                                        "skip_bad_files=true to leave them out"))
        print(f"warning: skipping {counted}", file=sys.stderr)
    return good


def _stylize_one(stylizer: Any, style_code: Any, loaded: Any, output: Path, fingerprint: str, args: dict,
                 progress: _Progress) -> Any:
    """Stylize ``loaded`` into ``output`` unless it is up to date; return the output as a PIL image."""
    from PIL import Image

    from advtune.stylize_images import fingerprint_of, save_output
    from advtune.tiling import apply_tiled

    if fingerprint_of(output) == fingerprint:
        progress.finish(str(output), computed=False)
        with Image.open(output) as existing:
            existing.load()
            return existing
    device = stylizer.transfer.last_layer.device
    result = apply_tiled(lambda tile: stylizer.stylize(tile, style_code), loaded.rgb.to(device),
                         args["tile_size"] or 1 << 30, args["tile_overlap"], stylizer.downsampling_factor,
                         progress.on_tile)
    try:
        image = save_output(result.cpu(), loaded.alpha, output, fingerprint)
    except OSError as error:
        raise ConfigError(f"stylize: cannot write {output}: {error.strerror or error}") from None
    progress.finish(str(output), computed=True)
    return image


def main(overrides: list[str]) -> None:
    """Stylize every content image into ``out_dir`` (see :data:`HELP`)."""
    import torch

    from advtune.stylize_images import (IMAGE_SUFFIXES, check_outputs_are_ours, file_digest, list_content_files,
                                        output_paths, read_image, save_contact_sheet, thumbnail)
    from advtune.stylize_model import load_style_image, load_stylizer

    args = parse_arguments(overrides)
    content, style = Path(args["content"]).expanduser(), Path(args["style"]).expanduser()
    out_dir = Path(args["out_dir"]).expanduser()
    prefixes = tuple(p for p in args["allowed_target_prefixes"].split(",") if p)
    stylizer, model_files = load_stylizer(args["ckpt_path"], prefixes)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args["device"] == "auto" else args["device"]
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"stylize: device={device} but this torch sees no CUDA device")
    stylizer.to(device)
    style_image, style_code = load_style_image(stylizer, style, args["style_size"])

    files = list_content_files(content, exclude=(style,))
    if not files:
        raise ConfigError(f"stylize: no image files ({', '.join(IMAGE_SUFFIXES)}) in {content}")
    scanned = _scan(files, bool(args["skip_bad_files"]), content)
    files = [path for path, _ in scanned]
    outputs = output_paths(files, style, out_dir)
    check_outputs_are_ours(outputs)
    settings = {key: args[key] for key in ("tile_size", "tile_overlap", "style_size")} | {"format": 1}
    shared = file_digest(model_files + [style]) + json.dumps(settings, sort_keys=True)
    progress = _Progress([size for _, size in scanned])
    style_thumb = thumbnail(style_image, _SHEET_HEIGHT)
    rows, started = [], time.perf_counter()
    for path, output in zip(files, outputs):
        loaded = read_image(path)
        progress.start(path.name, *loaded.rgb.shape[-2:])
        fingerprint = hashlib.sha256((shared + file_digest([path])).encode()).hexdigest()
        result = _stylize_one(stylizer, style_code, loaded, output, fingerprint, args, progress)
        if len(rows) < _SHEET_ROWS:
            rows.append((path.name, thumbnail(loaded.rgb, _SHEET_HEIGHT), style_thumb,
                         thumbnail(result, _SHEET_HEIGHT)))
    sheet = save_contact_sheet(rows, out_dir / f"contact_sheet_{style.stem}.png")
    shown = f" (the first {_SHEET_ROWS} images)" if len(files) > _SHEET_ROWS else ""
    print(f"{len(files)} image(s) in {time.perf_counter() - started:.1f} s → {out_dir}; "
          f"contact sheet {sheet}{shown}")


if __name__ == "__main__":  # python -m advtune.stylize ... == advtune stylize ...
    from advtune.cli import main as cli_main

    sys.exit(cli_main(["stylize", *sys.argv[1:]]))
