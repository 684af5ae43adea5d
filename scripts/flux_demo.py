"""The Flux demo: does latent adversarial LoRA fine-tuning help few-step sampling? (CPU, minutes)

1. Train a tiny Flux base (``experiment=flux_base``, full fine-tuning) on digits 0–4, or reuse the
   one cached in ``.demo_cache/`` by an earlier run with the same settings.
2. Adapt it with LoRA to the held-out digits 5–9, twice, at equal generator steps:
   (b) flow matching only (``use_latent_adv=false``);
   (c) flow matching, then the latent adversarial stage (``experiment=flux_lora_latent_adv``).
3. Score (a) the base, (b) and (c) with the digits Fréchet distance at 1/2/4/8 Euler steps against
   the held-out validation images of 5–9 (same noise for everyone), print the table, and write
   ``table.md``, ``results.json`` and side-by-side sample grids to ``--out``.

    python scripts/flux_demo.py [--out outputs/flux_demo] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

import torch

BASE_DIGITS, NEW_DIGITS = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
STEP_COUNTS = [1, 2, 4, 8]
ROOT = Path(__file__).resolve().parent.parent
LABELS = {"(a) base, no LoRA": "(a) base", "(b) LoRA, flow matching": "(b) LoRA FM",
          "(c) LoRA, + latent adversarial": "(c) LoRA FM+adv"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/flux_demo")
    parser.add_argument("--cache", default=str(ROOT / ".demo_cache"))
    parser.add_argument("--base-steps", type=int, default=2000, help="generator updates of the base")
    parser.add_argument("--lora-steps", type=int, default=600, help="generator updates of each LoRA run")
    parser.add_argument("--adv-start", type=int, default=300, help="LoRA steps of flow matching before (c)'s adversarial stage")
    parser.add_argument("--samples", type=int, default=500, help="samples per step count for the Fréchet distance")
    parser.add_argument("--discriminator", default="latent", choices=["latent", "flux_features"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for these tiny ops)")
    parser.add_argument("--quick", action="store_true", help="a smoke run (tiny step counts; numbers meaningless)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for run (c), e.g. latent_adv_loss_weight=0.3")
    args = parser.parse_args()
    if args.quick:
        args.base_steps, args.lora_steps, args.adv_start, args.samples = 20, 10, 5, 64
        args.overrides = ["disc_warmup_steps=2", *args.overrides]
    return args


def run(overrides: list[str]) -> Path:
    """Train with ``advtune.runner.train`` (what ``advtune train`` runs); return the last checkpoint."""
    from advtune.config import compose_config
    from advtune.runner import train

    cfg = compose_config(overrides + ["trainer.enable_progress_bar=false"])
    train(cfg)
    return Path(cfg.output_dir) / "checkpoints" / "last.ckpt"


def base_model(args: argparse.Namespace, out: Path) -> Path:
    """The base's ``save_pretrained`` directory: cached, or trained now and cached."""
    from advtune.runner import load_run

    settings = json.dumps({"steps": args.base_steps, "digits": BASE_DIGITS, "version": 1})
    cache = Path(args.cache) / f"flux_base_{hashlib.sha256(settings.encode()).hexdigest()[:10]}"
    if (cache / "config.json").is_file():
        print(f"[base] reusing {cache}")
        return cache
    print(f"[base] training the tiny Flux base on digits {BASE_DIGITS} for {args.base_steps} steps")
    ckpt = run(["experiment=flux_base", f"output_dir={out / 'base'}", f"data.digits={BASE_DIGITS}",
                f"trainer.max_steps={args.base_steps}", f"trainer.val_check_interval={args.base_steps}",
                "task.num_validation_samples=64", f"checkpoint_every={args.base_steps}"])
    module, _ = load_run(ckpt)
    module.task.export(cache)
    shutil.copy(ckpt, cache / "training_last.ckpt")
    return cache


@torch.no_grad()
def evaluate(task, num_samples: int) -> tuple[dict[int, float], dict[int, torch.Tensor]]:
    """Digits FD at each step count vs the held-out images of NEW_DIGITS; also a 64-sample grid each."""
    from advtune.data.digits import load_digits_images
    from advtune.metrics.digits_classifier import DigitsFrechetDistance

    task.eval()
    references, _ = load_digits_images("val", seed=0, val_fraction=0.2, digits=NEW_DIGITS)
    metric = DigitsFrechetDistance()
    stats = metric.reference_statistics(references)
    scores, grids = {}, {}
    for steps in STEP_COUNTS:
        images = task.sample(num_samples, generator=torch.Generator().manual_seed(0), num_steps=steps)
        scores[steps], grids[steps] = float(metric(images, stats)), images[:64]
    return scores, grids


def main() -> None:
    args = parse_args()
    from advtune.runner import load_run
    from advtune.tasks.flux_lora import FluxLoRATask
    from advtune.visualize import save_side_by_side

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    started = time.time()
    base_dir = base_model(args, out)
    common = ["experiment=flux_lora_latent_adv", f"task.pretrained_path={base_dir}", f"data.digits={NEW_DIGITS}",
              f"trainer.max_steps={args.lora_steps}", f"trainer.val_check_interval={args.lora_steps}",
              "task.num_validation_samples=64", f"checkpoint_every={args.lora_steps}",
              f"latent_adv_start_step={args.adv_start}"]
    rows = {"(a) base, no LoRA": FluxLoRATask(pretrained_path=str(base_dir))}
    print(f"[b] LoRA, flow matching only, {args.lora_steps} steps")
    ckpt_b = run(common + [f"output_dir={out / 'lora_flow_matching'}", "use_latent_adv=false"])
    rows["(b) LoRA, flow matching"] = load_run(ckpt_b)[0].task
    print(f"[c] LoRA, flow matching for {args.adv_start} steps then latent adversarial ({args.discriminator} D)")
    ckpt_c = run(common + [f"output_dir={out / 'lora_latent_adv'}", f"discriminator={args.discriminator}", *args.overrides])
    rows["(c) LoRA, + latent adversarial"] = load_run(ckpt_c)[0].task

    results, grids = {}, {}
    for name, task in rows.items():
        results[name], grids[name] = evaluate(task, args.samples)
    header = "| model | " + " | ".join(f"FD @ {n} step{'s' if n > 1 else ''}" for n in STEP_COUNTS) + " |"
    lines = [header, "|" + "---|" * (len(STEP_COUNTS) + 1)]
    lines += [f"| {name} | " + " | ".join(f"{scores[n]:.1f}" for n in STEP_COUNTS) + " |" for name, scores in results.items()]
    table = "\n".join(lines)
    for steps in STEP_COUNTS:
        save_side_by_side({f"{LABELS[name]}, {steps} step{'s' if steps > 1 else ''}": grids[name][steps] for name in rows},
                          out / f"samples_{steps}_steps.png")
    note = (f"digits Fréchet distance (lower is better; not comparable to Inception FID) of {args.samples} samples vs "
            f"the held-out validation images of digits {NEW_DIGITS}; base trained on {BASE_DIGITS} for "
            f"{args.base_steps} steps; (b) and (c) {args.lora_steps} LoRA steps each, (c) adversarial after "
            f"step {args.adv_start}; {args.discriminator} discriminator; extra overrides {args.overrides or 'none'}.")
    (out / "table.md").write_text(table + "\n\n" + note + "\n")
    (out / "results.json").write_text(json.dumps({"results": results, "args": vars(args)}, indent=2))
    print("\n" + table + "\n\n" + note)
    print(f"grids: {out}/samples_*_steps.png   ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
