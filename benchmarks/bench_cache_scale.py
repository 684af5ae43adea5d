"""Peak RAM, time per batch and disk per item of ``data=image_folder``'s caches at 100, 1,000 and 10,000 items.

The caches hold FLUX.1-dev's real shapes: per image a VAE latent ``16×64×64`` (512×512 px) in
bfloat16, as a bf16 VAE writes it, and per distinct caption a T5 embedding ``512×4096`` plus a
CLIP pooled ``768`` in bfloat16. The tensors are synthetic (random), written in the cache format
by the cache's own functions (keys from the data module, :func:`advtune.data.item_cache.write_item`);
the encoders do not run. Everything after that is the real reading path: one child process per N
(the training side) builds :class:`advtune.data.image_folder.CaptionedImageFolderDataModule` on
the folder, runs ``prepare_data`` (it must find nothing to encode), ``setup``, and draws batches
from ``train_dataloader()``. It reports the process's peak RSS (``VmHWM``), its RSS after imports,
the time of ``setup`` and the time per batch (median and 95th percentile, after a warm-up; the
files were just written, so reads come from the page cache, as they mostly do while training).

Real sets share captions (an instance prompt, a trigger phrase, a few templates): ``--captions``
distinct captions at most (default 1,000), so N = 10,000 has 10 images per caption while N = 100
and 1,000 have one each. That keeps the disk at about 4 GiB of T5 embeddings instead of 40 GiB.
N = 1,000 and 10,000 use one folder: 9,000 images are added to the 1,000, and only their latents
are written (what a re-run after adding images does).

Then a small real run on the tiny FLUX.1-layout snapshot (:mod:`advtune.models.flux_snapshot`,
resolution 64, T5 length 16): a captioned folder of 100 images is cached by the real VAE and
encoders, 10 images with new captions are added, and the re-run's console line and time show
that only those 10 are encoded.

    python benchmarks/bench_cache_scale.py [--sizes 100 1000 10000] [--captions 1000] [--batches 200]

Every file it writes is deleted at the end (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T5_SHAPE, POOLED, LATENT_SHAPE, RESOLUTION = (512, 4096), 768, (16, 64, 64), 512


def _module(image_dir: Path, snapshot: Path, **extra):
    from advtune.data.image_folder import CaptionedImageFolderDataModule

    return CaptionedImageFolderDataModule(str(image_dir), str(snapshot), resolution=extra.pop("resolution", RESOLUTION),
                                          max_sequence_length=extra.pop("max_sequence_length", T5_SHAPE[0]),
                                          encoder_dtype="bfloat16", device="cpu", **extra)


def add_items(image_dir: Path, snapshot: Path, start: int, stop: int, captions: int) -> None:
    """Images ``start..stop-1`` (tiny PNGs: only their names, sizes and times key the cache), their
    captions, and their cache items with FLUX.1-dev's shapes, written by the cache's own functions."""
    import torch
    from PIL import Image

    from advtune.data.item_cache import file_item_key, shape_tag, text_item_key, write_item
    from advtune.data.text_embeddings import text_cache

    image_dir.mkdir(parents=True, exist_ok=True)
    pixel = Image.new("RGB", (8, 8), (120, 60, 30))
    for i in range(start, stop):
        pixel.save(image_dir / f"img{i:05d}.png")
        (image_dir / f"img{i:05d}.txt").write_text(f"caption {i % captions}, sks style")
    data = _module(image_dir, snapshot)
    latents = data._latent_cache()
    texts = text_cache(data.snapshot, data.cache_dir, T5_SHAPE[0], torch.bfloat16)
    generator = torch.Generator().manual_seed(start)
    base = torch.randn(*T5_SHAPE, generator=generator).to(torch.bfloat16)
    for i in range(start, stop):
        path = image_dir / f"img{i:05d}.png"
        write_item(latents.path(file_item_key(path, image_dir), shape_tag(LATENT_SHAPE)),
                   {"latents": torch.randn(*LATENT_SHAPE, generator=generator).to(torch.bfloat16)})
        caption = data.captions[path]
        target = texts.path(text_item_key(caption))
        if not target.is_file():
            embeds = base.clone()
            embeds[0, 0] = float(i)  # distinct content per caption
            write_item(target, {"prompt_embeds": embeds, "pooled_prompt_embeds": torch.randn(POOLED).to(torch.bfloat16)},
                       metadata={"prompt": caption})


def _vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(args: argparse.Namespace) -> None:
    """The training side: the real data module over the cached folder; one JSON line on stdout."""
    import contextlib
    import io

    import torch

    from advtune.data.image_folder import CaptionedImageFolderDataModule  # noqa: F401 - imported before measuring

    torch.set_num_threads(1)
    after_imports = _vm_kib("VmRSS")
    started = time.perf_counter()
    data = _module(Path(args.image_dir), Path(args.snapshot), batch_size=args.batch_size)  # lists files, reads captions
    listed = time.perf_counter()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        data.prepare_data()  # keys (a stat per image) and one listing per cache: nothing to encode
    if "caching" in printed.getvalue():
        raise SystemExit(f"the child had to encode: {printed.getvalue()}")
    prepared = time.perf_counter()
    data.setup("fit")
    loader = data.train_dataloader()
    ready = time.perf_counter()
    times, batches = [], 0
    while batches < args.warmup + args.batches:
        iterator, last = iter(loader), time.perf_counter()
        for batch in iterator:
            now = time.perf_counter()
            if batches >= args.warmup:
                times.append(now - last)
            batches += 1
            assert batch["prompt_embeds"].shape[1:] == T5_SHAPE and batch["latents"].shape[1:] == LATENT_SHAPE
            if batches >= args.warmup + args.batches:
                break
            last = time.perf_counter()
    times.sort()
    print(json.dumps({"items": len(data.files), "train": len(data.train_dataset), "init_s": listed - started,
                      "prepare_s": prepared - listed, "setup_s": ready - prepared,
                      "rss_imports_mib": after_imports / 1024, "peak_rss_mib": _vm_kib("VmHWM") / 1024,
                      "batch_ms": 1000 * statistics.median(times), "batch_p95_ms": 1000 * times[int(0.95 * len(times))]}))


def _disk(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def measure(image_dir: Path, snapshot: Path, args: argparse.Namespace) -> dict:
    """Two training-side processes in a row: the first reads what writing left in the page cache, the second
    what the first read (warm)."""
    command = [sys.executable, __file__, "--child", "--image-dir", str(image_dir), "--snapshot", str(snapshot),
               "--batches", str(args.batches), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
    runs = []
    for _ in range(2):
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode:
            sys.exit(f"child for {image_dir} failed:\n{run.stderr[-3000:]}")
        runs.append(json.loads(run.stdout.strip().splitlines()[-1]))
    row = {**runs[1], "first_batch_ms": runs[0]["batch_ms"], "first_prepare_s": runs[0]["prepare_s"],
           "peak_rss_mib": max(r["peak_rss_mib"] for r in runs)}
    cache = image_dir / ".advtune_cache"
    latents, texts = next(cache.glob("latents-*")), next(cache.glob("text-*"))
    row.update(captions=len(list(texts.iterdir())), latent_kib=_disk(latents) / row["items"] / 1024,
               text_mib=_disk(texts) / row["items"] / 2**20, disk_gib=_disk(cache) / 2**30)
    return row


def incremental(work: Path) -> list[str]:
    """100 real images cached by the tiny snapshot's encoders, 10 more added: what the re-run encodes."""
    import contextlib
    import io

    import numpy as np
    from PIL import Image

    from advtune.models.flux_snapshot import write_tiny_flux_snapshot

    snapshot = write_tiny_flux_snapshot(work / "tiny-real")
    folder, rng = work / "real-images", np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for label, indices in (("first run, 100 images", range(100)), ("re-run after adding 10", range(100, 110))):
        for i in indices:  # three aspect ratios, so three buckets
            image = rng.integers(0, 255, (64, 48 + 16 * (i % 3), 3), dtype=np.uint8)
            Image.fromarray(image).save(folder / f"{i:03d}.png")
            (folder / f"{i:03d}.txt").write_text(f"photo {i}, sks style")
        printed, started = io.StringIO(), time.perf_counter()
        with contextlib.redirect_stdout(printed):
            _module(folder, snapshot, resolution=64, max_sequence_length=16).prepare_data()
        seconds = time.perf_counter() - started
        said = [line.split(" of data.image_dir")[0].split("; CLIP")[0] + (")" if "; CLIP" in line else "")
                for line in printed.getvalue().splitlines() if line.startswith("caching")]
        lines.append(f"{label}: {seconds:.1f} s; " + "; ".join(said))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--captions", type=int, default=1000, help="distinct captions at most (shared above)")
    parser.add_argument("--batches", type=int, default=200, help="timed batches per N")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1, help="data.batch_size (FLUX.1 LoRA trainers: 1)")
    parser.add_argument("--workdir", help="where to write (default: a temporary folder under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--image-dir", help=argparse.SUPPRESS)
    parser.add_argument("--snapshot", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from advtune.console import quiet_dependencies, quiet_model_loading
    from advtune.models.flux_snapshot import write_tiny_flux_snapshot

    quiet_dependencies()
    quiet_model_loading()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_cache_scale_"))
    try:
        snapshot = write_tiny_flux_snapshot(work / "tiny")  # its VAE config and encoder files key the caches
        rows, folders, done = [], {}, {}
        for n in sorted(args.sizes):
            # N = 100 alone; larger N grow one folder, as a dataset grows (only the new items are written).
            folder = work / ("small" if n < 1000 else "large")
            started = time.perf_counter()
            add_items(folder, snapshot, done.get(folder, 0), n, min(n, args.captions))
            done[folder] = n
            rows.append({"n": n, "write_s": time.perf_counter() - started, **measure(folder, snapshot, args)})
            print(f"measured N={n}: {rows[-1]}", flush=True)
            folders[n] = folder
        print(f"\ndata=image_folder caches at FLUX.1-dev shapes (latent 16x64x64 bf16, T5 512x4096 + CLIP 768 bf16), "
              f"batch size {args.batch_size}, median of {args.batches} batches after {args.warmup}; two processes per N, "
              f"one after the other (1st: after writing, 2nd: warm page cache); peak RSS: the larger of the two")
        print(f"{'N':>6}{'captions':>9}{'peak RSS MiB':>13}{'x N=' + str(rows[0]['n']):>9}{'RSS imports':>12}"
              f"{'init s':>8}{'keys s':>13}{'setup s':>8}{'ms/batch':>14}{'p95 ms':>7}{'latent KiB':>11}"
              f"{'T5 MiB':>7}{'disk GiB':>9}")
        for row in rows:
            print(f"{row['n']:>6}{row['captions']:>9}{row['peak_rss_mib']:>13.1f}"
                  f"{row['peak_rss_mib'] / rows[0]['peak_rss_mib']:>9.3f}{row['rss_imports_mib']:>12.1f}"
                  f"{row['init_s']:>8.2f}{row['first_prepare_s']:>6.2f} /{row['prepare_s']:>5.2f}{row['setup_s']:>8.2f}"
                  f"{row['first_batch_ms']:>7.2f} /{row['batch_ms']:>5.2f}{row['batch_p95_ms']:>7.2f}"
                  f"{row['latent_kib']:>11.1f}{row['text_mib']:>7.2f}{row['disk_gib']:>9.2f}")
        print("columns: init = listing the folder and reading captions; keys = stat per image + one listing per cache "
              "(1st / 2nd process); ms/batch 1st / 2nd process; p95 of the 2nd; latent KiB and T5 MiB per item")
        print("goal: peak RSS at the largest N within 1.2x of the smallest, time per batch flat")
        print("\nadding images (tiny FLUX.1-layout snapshot, real VAE + CLIP + T5, 64 px, T5 length 16):")
        for line in incremental(work):
            print("  " + line)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
