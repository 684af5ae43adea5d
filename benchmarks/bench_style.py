"""What the VQGAN and style-transfer jobs cost per step at the old and the new training resolution,
and what ``advtune stylize`` costs per image, whole or in tiles.

Training: each experiment is composed as shipped (``experiment=vqgan``, ``experiment=style_transfer``)
and, for "before", with the overrides of the previous preset (32×32 patches of images resized to a
128-pixel short side, batch 16 / 8, a 2-layer PatchGAN). One step is what ``AdversarialModule`` does
after ``disc_start``: the task's generator forward, the generator loss with the adaptive weight and
its backward, an Adam step, the discriminator loss and its backward, an Adam step, on real batches of
the experiment's data module. Minutes per run = seconds per step × the experiment's
``trainer.max_steps`` (validation, checkpoints and start-up not included).

Stylize: a random-weight model of the shipped sizes on a smooth random photo of each ``--sizes``,
whole (``tile_size=0``) and tiled (1,024 and 512), each in its own process, with its peak RSS.

Times are process CPU seconds with one thread (median of ``--repeats`` after one warm-up), so other
jobs on a shared machine barely move them.

    OMP_NUM_THREADS=1 python benchmarks/bench_style.py [--repeats 5] [--sizes 741x500,2048x1536,4032x3024]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from omegaconf import open_dict

BEFORE = {
    "vqgan": ["data.patch_size=32", "data.short_side=128", "data.batch_size=16", "discriminator.n_layers=2",
              "task.autoencoder.num_codes=128", "task.autoencoder.dead_code_threshold=0", "trainer.max_steps=1500"],
    "style_transfer": ["data.patch_size=32", "data.content_short_side=128", "data.style_short_side=128",
                       "data.batch_size=8", "discriminator.n_layers=2"],
}


def _cpu_seconds(run, repeats: int) -> float:
    run()  # warm-up: allocator, data-initialised codebook
    times = []
    for _ in range(repeats):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return statistics.median(times)


def train_step_seconds(experiment: str, before: bool, repeats: int) -> tuple[float, int, str]:
    """CPU seconds of one adversarial training step of ``experiment`` as shipped or ``before``."""
    import torch

    from advtune.config import compose_config
    from advtune.runner import build
    from advtune.tasks.vqgan import VQGANTask

    overrides = BEFORE[experiment] if before else []
    cfg = compose_config([f"experiment={experiment}", "output_dir=/tmp/advtune-bench-style", *overrides])
    if experiment == "style_transfer":  # the autoencoder of experiment=vqgan, untrained (it costs the same)
        with open_dict(cfg):
            vqgan = compose_config(["experiment=vqgan", *(BEFORE["vqgan"] if before else [])])
            cfg.task.autoencoder = vqgan.task.autoencoder
    built = build(cfg)
    module, data = built.module, built.datamodule
    task, disc, calc = module.task, module.discriminator, module.calculator
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    opt_g = torch.optim.Adam(task.trainable_parameters(), 1e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), 1e-4, betas=(0.5, 0.9))
    task.train()
    after_start = int(cfg.adversarial.warmup_steps) + 1

    def step() -> None:
        out = task.generator_predict(batch)
        disc.requires_grad_(False)
        g = calc.compute_generator_loss(disc, out.real, out.fake, after_start, base_loss=out.base_loss,
                                        last_layer=out.last_layer)
        opt_g.zero_grad(set_to_none=True)
        g["loss"].backward()
        opt_g.step()
        disc.requires_grad_(True)
        d = calc.compute_discriminator_loss(disc, out.real, out.fake.detach(), after_start)
        opt_d.zero_grad(set_to_none=True)
        d["loss"].backward()
        opt_d.step()

    images = batch["image"] if isinstance(task, VQGANTask) else batch["content"]
    shape = f"{images.shape[0]}×{images.shape[-1]}²"
    return _cpu_seconds(step, repeats), int(cfg.trainer.max_steps), shape


def stylize_child(height: int, width: int, tile: int, repeats: int) -> dict:
    """In a fresh process: CPU seconds and peak RSS of stylizing one ``height×width`` photo."""
    import torch

    from advtune.config import compose_config
    from advtune.runner import build
    from advtune.stylize_model import Stylizer
    from advtune.tiling import apply_tiled

    cfg = compose_config(["experiment=style_transfer", "output_dir=/tmp/advtune-bench-style"])
    with open_dict(cfg):
        cfg.task.autoencoder = compose_config(["experiment=vqgan"]).task.autoencoder
    task = build(cfg, with_data=False).module.task
    stylizer = Stylizer(task.autoencoder, task.transfer, True)
    generator = torch.Generator().manual_seed(0)
    photo = torch.nn.functional.interpolate(torch.rand(1, 3, height // 16 + 1, width // 16 + 1, generator=generator),
                                            size=(height, width), mode="bilinear") * 2 - 1
    code = stylizer.style_code(photo[..., :256, :256])
    seconds = _cpu_seconds(lambda: apply_tiled(lambda x: stylizer.stylize(x, code), photo, tile or 1 << 30, 128, 4),
                           repeats)
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="741x500,2048x1536,4032x3024")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.child:
        height, width, tile = (int(v) for v in args.child.split(","))
        print(json.dumps(stylize_child(height, width, tile, max(1, args.repeats // 3))))
        return
    from advtune.console import quiet_dependencies

    quiet_dependencies()
    print("| job | patches (batch × side²) | s / step | × before | max_steps | min / run |")
    print("|---|---|---|---|---|---|")
    for experiment in ("vqgan", "style_transfer"):
        before = train_step_seconds(experiment, True, args.repeats)
        now = train_step_seconds(experiment, False, args.repeats)
        for label, (seconds, steps, shape) in (("before", before), ("now", now)):
            print(f"| {experiment} ({label}) | {shape} | {seconds:.3f} | {seconds / before[0]:.2f} | {steps} | "
                  f"{seconds * steps / 60:.1f} |", flush=True)
    print("\n| photo | tile_size | s / image | s / megapixel | peak RSS (MB) |\n|---|---|---|---|---|")
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        for tile in (0, 1024, 512):
            if tile and max(width, height) <= tile:
                continue
            out = subprocess.run([sys.executable, __file__, "--child", f"{height},{width},{tile}",
                                  "--repeats", str(args.repeats)], capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            megapixels = width * height / 1e6
            print(f"| {width}×{height} | {tile or 'whole'} | {result['seconds']:.1f} | "
                  f"{result['seconds'] / megapixels:.1f} | {result['peak_rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
