"""VQGAN and style transfer with and without the adversarial term, 3 seeds, scored on held-out photos.

Trains (or, for runs already finished in ``--out``, just reads) per seed:

* ``vqgan_adv_sS`` / ``vqgan_l1_sS``: ``experiment=vqgan`` as shipped / with ``module.use_adversarial=false``;
* ``style_adv_sS`` / ``style_l1_sS``: ``experiment=style_transfer`` with the same two arms, all in the
  frozen autoencoder of ``vqgan_adv_s0`` (the one the docs picture uses), seeds of the transfer module.

Then scores each run on what no run trains on, at the photos' own resolution (``HELD_OUT_PHOTOS``:
motorcycle 741×500, camera 512×512, coins 384×303), next to the runs' own last validation:

* autoencoders: PSNR and sharpness ratio of the whole photo through the autoencoder;
* style transfer: for each of the 5 training styles, the RGB statistics distance
  ``‖μ(y) − μ(s)‖² + ‖σ(y) − σ(s)‖²`` between the stylized photo (``advtune stylize``'s own path)
  and the style image, over the same distance for the unstylized photo (1 = no transfer, 0 = the
  style's colour statistics reached), and how far the output moved from the photo (PSNR);
* seams: the motorcycle stylized whole and in 256-pixel tiles (blended, and butted with no overlap),
  PSNR of tiled vs whole and :func:`advtune.tiling.seam_ratio` at the tile borders.

Prints markdown tables (mean ± sample std over seeds, and the per-seed values), writes
``results.json`` in ``--out``, and with ``--docs`` the before/after picture
``docs/images/stylize_motorcycle.jpg`` (content | style | stylized, L_AE + PatchGAN and L_AE only) and
the seed-0 runs' validation grids.

    OMP_NUM_THREADS=1 python scripts/style_study.py --out outputs/style_study [--seeds 0 1 2] [--docs docs]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ARMS = {"adv": [], "l1": ["module.use_adversarial=false"]}


def advtune(args: list[str], log: Path) -> float:
    """``python -m advtune.cli ARGS`` with one thread, output to ``log``; wall seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with open(log, "a") as handle:
        subprocess.run([sys.executable, "-m", "advtune.cli", *args], check=True, env=env, stdout=handle,
                       stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def train_all(out: Path, seeds: list[int]) -> None:
    for job in ("vqgan", "style"):
        for arm, overrides in ARMS.items():
            for seed in seeds:
                run = out / f"{job}_{arm}_s{seed}"
                if (run / ("vq_autoencoder.pt" if job == "vqgan" else "style_transfer.pt")).is_file():
                    continue
                autoencoder = out / "vqgan_adv_s0" / "vq_autoencoder.pt"
                extra = [] if job == "vqgan" else [f"task.autoencoder_path={autoencoder}"]
                experiment = "vqgan" if job == "vqgan" else "style_transfer"
                seconds = advtune(["train", f"experiment={experiment}", f"seed={seed}", f"output_dir={run}",
                                   "trainer.enable_progress_bar=false", *overrides, *extra], out / f"{run.name}.log")
                print(f"trained {run.name} in {seconds / 60:.1f} min", flush=True)


def last_validation(run: Path) -> dict[str, float]:
    import csv

    values: dict[str, float] = {}
    with open(run / "metrics.csv") as handle:
        for row in csv.DictReader(handle):
            values.update({k: float(v) for k, v in row.items() if k.startswith("val/") and v})
    return values


def photo(name: str) -> torch.Tensor:
    """A bundled photo at its own resolution, ``(1, 3, H, W)`` in [-1, 1]."""
    from advtune.data.bundled_images import load_bundled_image

    return load_bundled_image(name)[None]


@torch.no_grad()
def score_autoencoder(run: Path) -> dict[str, float]:
    from advtune.data.bundled_images import HELD_OUT_PHOTOS
    from advtune.io import load_model
    from advtune.tasks.vqgan import psnr, sharpness_ratio
    from advtune.tiling import pad_to_multiple

    model = load_model(run / "vq_autoencoder.pt").eval()
    scores: dict[str, list[float]] = {"psnr": [], "sharpness": []}
    for name in HELD_OUT_PHOTOS:
        image = photo(name)
        output = model(pad_to_multiple(image, model.downsampling_factor)).reconstruction
        output = output[..., : image.shape[-2], : image.shape[-1]]
        scores["psnr"].append(float(psnr(output, image)))
        scores["sharpness"].append(float(sharpness_ratio(output, image)))
    return {f"held-out {k}": statistics.mean(v) for k, v in scores.items()}


def _rgb_distance(image: torch.Tensor, style: torch.Tensor) -> float:
    from advtune.losses.style import channel_statistics

    (mean_a, std_a), (mean_b, std_b) = channel_statistics(image), channel_statistics(style)
    return float((mean_a - mean_b).pow(2).mean() + (std_a - std_b).pow(2).mean())


@torch.no_grad()
def score_style(run: Path) -> dict[str, float]:
    from advtune.data.bundled_images import HELD_OUT_PHOTOS, STYLE_IMAGES, bundled_image_path
    from advtune.stylize_model import load_style_image, load_stylizer
    from advtune.tasks.vqgan import psnr
    from advtune.tiling import apply_tiled

    stylizer, _ = load_stylizer(run)
    ratios, moved = [], []
    for style_name in STYLE_IMAGES:
        style, code = load_style_image(stylizer, bundled_image_path(style_name))
        for name in HELD_OUT_PHOTOS:
            image = photo(name)
            output = apply_tiled(lambda x: stylizer.stylize(x, code), image, 1024, 128, stylizer.downsampling_factor)
            ratios.append(_rgb_distance(output, style) / _rgb_distance(image, style))
            moved.append(float(psnr(output, image)))
    return {"held-out rgb style gap left": statistics.mean(ratios), "held-out psnr to photo": statistics.mean(moved)}


@torch.no_grad()
def score_seams(run: Path) -> dict[str, float]:
    from advtune.data.bundled_images import bundled_image_path
    from advtune.stylize_model import load_style_image, load_stylizer
    from advtune.tasks.vqgan import psnr
    from advtune.tiling import apply_tiled, seam_ratio, tile_borders

    stylizer, _ = load_stylizer(run)
    _, code = load_style_image(stylizer, bundled_image_path("immunohistochemistry"))
    image = photo("motorcycle")
    height, width = (side + (-side) % 4 for side in image.shape[-2:])  # the padded sides the tiles cover

    def network(x: torch.Tensor) -> torch.Tensor:
        return stylizer.stylize(x, code)
    whole = apply_tiled(network, image, 1 << 30, 0, 4)
    result = {}
    for label, overlap in (("blended", 128), ("butted", 0)):
        tiled = apply_tiled(network, image, 256, overlap, 4)
        rows, cols = tile_borders(height, 256, overlap, 4), tile_borders(width, 256, overlap, 4)
        result[f"{label} psnr vs whole"] = float(psnr(tiled, whole))
        result[f"{label} seam ratio"] = seam_ratio(tiled[0], rows, cols) / seam_ratio(whole[0], rows, cols)
    return result


def figure(out: Path, docs: Path) -> None:
    """content | style | stylized (adv) | stylized (l1) for three styles, at the photo's own resolution
    (JPEG, quality 80: a photo), and the seed-0 runs' last validation grids (256-colour PNG)."""
    from PIL import Image, ImageDraw

    from advtune.data.bundled_images import bundled_image_path

    rows = []
    for style in ("immunohistochemistry", "hubble_deep_field", "gravel"):
        outputs = []
        for arm in ("adv", "l1"):
            target = out / f"stylized_{arm}"
            advtune(["stylize", f"ckpt_path={out / f'style_{arm}_s0'}", f"content={bundled_image_path('motorcycle')}",
                     f"style={bundled_image_path(style)}", f"out_dir={target}"], out / "stylize.log")
            outputs.append(Image.open(target / f"motorcycle_left_{bundled_image_path(style).stem}.png").convert("RGB"))
        content = Image.open(bundled_image_path("motorcycle")).convert("RGB")
        style_image = Image.open(bundled_image_path(style)).convert("RGB")
        width = round(style_image.width * content.height / style_image.height)
        style_image = style_image.resize((width, content.height))
        rows.append([content, style_image, *outputs])
    labels = ("content (held out, 741×500)", "style", "stylized: L_AE + PatchGAN", "stylized: L_AE only")
    widths = [max(row[i].width for row in rows) for i in range(4)]
    gap, band = 8, 16
    sheet = Image.new("RGB", (sum(widths) + gap * 5, band + len(rows) * (rows[0][0].height + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    left = gap
    for label, width in zip(labels, widths):
        draw.text((left, 3), label, fill=(0, 0, 0))
        left += width + gap
    for index, row in enumerate(rows):
        left, top = gap, band + index * (rows[0][0].height + gap)
        for image, width in zip(row, widths):
            sheet.paste(image, (left, top))
            left += width + gap
    path = docs / "images" / "stylize_motorcycle.jpg"
    sheet.save(path, quality=80, optimize=True)
    print(f"wrote {path}")
    grids = {"vqgan_adv_s0/samples/reconstructions_step002000.png": "vqgan_adversarial.png",
             "vqgan_l1_s0/samples/reconstructions_step002000.png": "vqgan_no_adversarial.png",
             "style_adv_s0/samples/transfer_step001000.png": "style_transfer_adversarial.png",
             "style_l1_s0/samples/transfer_step001000.png": "style_transfer_no_adversarial.png"}
    for source, name in grids.items():  # 256 colours, dithered: a third of the bytes, labels stay sharp
        grid = Image.open(out / source).convert("RGB")
        grid.quantize(256, dither=Image.Dither.FLOYDSTEINBERG).save(docs / "images" / name, optimize=True)


def table(title: str, results: dict[str, dict[int, dict[str, float]]], keys: list[str]) -> str:
    lines = [f"\n{title}\n", "| arm | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for arm, per_seed in results.items():
        cells = []
        for key in keys:
            values = [per_seed[seed][key] for seed in sorted(per_seed) if key in per_seed[seed]]
            spread = f" ± {statistics.stdev(values):.3g}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.4g}{spread} ({' / '.join(f'{v:.4g}' for v in values)})")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--docs", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    train_all(args.out, args.seeds)
    results: dict[str, dict[str, dict[int, dict[str, float]]]] = {"vqgan": {}, "style": {}}
    for job, score in (("vqgan", score_autoencoder), ("style", score_style)):
        for arm in ARMS:
            results[job][arm] = {seed: {**last_validation(run), **score(run)}
                                 for seed in args.seeds for run in [args.out / f"{job}_{arm}_s{seed}"]}
    seams = score_seams(args.out / "style_adv_s0")
    (args.out / "results.json").write_text(json.dumps({"results": results, "seams": seams}, indent=2))
    print(table("VQGAN", results["vqgan"], ["val/psnr", "val/sharpness_ratio", "val/perplexity", "val/dead_codes",
                                             "held-out psnr", "held-out sharpness"]))
    print(table("style transfer", results["style"], ["val/content_mse", "val/style_distance",
                                                     "val/style_distance_input", "val/style_distance_rgb",
                                                     "held-out rgb style gap left", "held-out psnr to photo"]))
    print("\nseams (motorcycle, 256-pixel tiles, seed 0):", json.dumps(seams))
    if args.docs:
        figure(args.out, args.docs)


if __name__ == "__main__":
    main()
