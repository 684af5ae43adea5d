"""The Flux demo: does latent adversarial LoRA fine-tuning help few-step sampling? (CPU, minutes)

1. Train a tiny Flux base (``experiment=flux_base``, full fine-tuning) on digits 0–4, or reuse the
   one cached in ``.demo_cache/`` by an earlier run with the same settings.
2. For each training seed (``--seeds``), adapt it with LoRA to the held-out digits 5–9, twice, at
   equal generator steps: (b) flow matching only (``use_latent_adv=false``); (c) flow matching, then
   the latent adversarial stage (``experiment=flux_lora_latent_adv``).
3. Score (a) the base, (b) and (c) with :func:`advtune.metrics.evaluate_digits` at 1/2/4/8 Euler steps:
   ``--samples`` samples per model and step count from the same noise (a seed no run trains or
   validates with) against ALL real images of 5–9, in the independent classifier's features (the
   validation classifier's Fréchet distance beside it). Print mean ± sample std over the seeds, and
   write ``table.md``, ``results.json`` (every seed's scores) and side-by-side grids to ``--out``.

    python scripts/flux_demo.py [--out outputs/flux_demo] [--seeds 0 1 2] [--quick] [override ...]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shutil
import time
from pathlib import Path

import torch

BASE_DIGITS, NEW_DIGITS = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
STEP_COUNTS = [1, 2, 4, 8]
SAMPLE_SEED = 20251  # the scoring noise: no training or validation uses it
ROOT = Path(__file__).resolve().parent.parent
MODELS = {"base": "(a) base, no LoRA", "fm": "(b) LoRA, flow matching only", "adv": "(c) LoRA + latent adversarial"}
GRID_LABELS = {"base": "(a) base", "fm": "(b) LoRA FM", "adv": "(c) LoRA FM+adv"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/flux_demo")
    parser.add_argument("--cache", default=str(ROOT / ".demo_cache"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds of the LoRA runs")
    parser.add_argument("--base-steps", type=int, default=2000, help="generator updates of the base")
    parser.add_argument("--lora-steps", type=int, default=600, help="generator updates of each LoRA run")
    parser.add_argument("--adv-start", type=int, default=None,
                        help="LoRA steps of flow matching before (c)'s adversarial stage (default: the experiment's)")
    parser.add_argument("--samples", type=int, default=1000, help="samples per model and step count (>= 1000)")
    parser.add_argument("--discriminator", default="latent", choices=["latent", "flux_features"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for these tiny ops)")
    parser.add_argument("--quick", action="store_true", help="a smoke run (tiny step counts; numbers meaningless)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for run (c), e.g. latent_adv_loss_weight=0.3")
    args = parser.parse_args(argv)
    args.min_samples = 1000
    if args.quick:
        args.base_steps, args.lora_steps, args.adv_start, args.samples, args.min_samples = 20, 10, 5, 64, 16
        args.overrides = ["disc_warmup_steps=2", *args.overrides]
    return args


def run(overrides: list[str]) -> Path:
    """Train with ``advtune.runner.train`` (what ``advtune train`` runs); return the last checkpoint."""
    from advtune.config import compose_config
    from advtune.runner import train

    cfg = compose_config(overrides + ["trainer.enable_progress_bar=false"])
    shutil.rmtree(cfg.output_dir, ignore_errors=True)  # a fresh run, never a resumed one
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


def train_lora(args: argparse.Namespace, base_dir: Path, output_dir: Path, seed: int, overrides: list[str]):
    """One LoRA run on digits 5–9 (``experiment=flux_lora_latent_adv`` + ``overrides``); its module, loaded."""
    from advtune.runner import load_run

    ckpt = run(["experiment=flux_lora_latent_adv", f"task.pretrained_path={base_dir}", f"data.digits={NEW_DIGITS}",
                f"seed={seed}", f"trainer.max_steps={args.lora_steps}", f"trainer.val_check_interval={args.lora_steps}",
                "task.num_validation_samples=64", f"checkpoint_every={args.lora_steps}",
                *([f"latent_adv_start_step={args.adv_start}"] if args.adv_start is not None else []),
                f"output_dir={output_dir}", *overrides])
    return load_run(ckpt)[0]


@torch.no_grad()
def score(model, args: argparse.Namespace) -> tuple[dict[int, dict[str, float]], dict[int, torch.Tensor]]:
    """:func:`evaluate_digits` of ``args.samples`` samples at each step count, same noise for every model;
    ``model`` is a task or a module (then sampled inside its ``generator_weights()``, the EMA when on)."""
    from advtune.metrics import evaluate_digits

    task = getattr(model, "task", model)
    weights = getattr(model, "generator_weights", contextlib.nullcontext)
    task.eval()
    scores, grids = {}, {}
    with weights():
        for steps in STEP_COUNTS:
            images = task.sample(args.samples, generator=torch.Generator().manual_seed(SAMPLE_SEED), num_steps=steps)
            scores[steps] = evaluate_digits(images, digits=NEW_DIGITS, min_samples=args.min_samples)
            grids[steps] = images[:64]
    return scores, grids


def tables(per_seed: dict[str, dict[str, list[float]]]) -> str:
    """Markdown: FD (independent), recall and precision, and the validation classifier's FD, per step count."""
    from advtune.metrics.seed_table import seed_table

    rows = {MODELS[key]: cells for key, cells in per_seed.items()}
    parts = []
    for metric, title, decimals in [("independent/fd", "FD", 1), ("independent/recall", "recall", 3),
                                    ("independent/precision", "precision", 3), ("validation/fd", "FD (val. clf)", 1)]:
        columns = [f"{metric}@{n}" for n in STEP_COUNTS]
        header = {f"{metric}@{n}": f"{title} @ {n} step{'s' if n > 1 else ''}" for n in STEP_COUNTS}
        parts.append(seed_table(rows, columns, decimals, header))
    return "\n\n".join(parts)


def record(per_seed: dict, key: str, scores: dict[int, dict[str, float]]) -> None:
    for steps, values in scores.items():
        for metric, value in values.items():
            per_seed.setdefault(key, {}).setdefault(f"{metric}@{steps}", []).append(value)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from advtune.console import quiet_dependencies

    quiet_dependencies()  # before diffusers and torchao print their import-time notices
    from advtune.tasks.flux_lora import FluxLoRATask
    from advtune.visualize import save_side_by_side

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    started = time.time()
    base_dir = base_model(args, out)
    per_seed: dict[str, dict[str, list[float]]] = {}
    base_scores, first_grids = score(FluxLoRATask(pretrained_path=str(base_dir)), args)
    record(per_seed, "base", base_scores)
    first_grids = {"base": first_grids}
    for seed in args.seeds:
        print(f"[seed {seed}] (b) LoRA, flow matching only, {args.lora_steps} steps")
        scores, grids = score(train_lora(args, base_dir, out / f"seed{seed}" / "lora_flow_matching", seed,
                                         ["use_latent_adv=false"]), args)
        record(per_seed, "fm", scores)
        first_grids.setdefault("fm", grids)
        print(f"[seed {seed}] (c) flow matching, then latent adversarial ({args.discriminator} D)")
        scores, grids = score(train_lora(args, base_dir, out / f"seed{seed}" / "lora_latent_adv", seed,
                                         [f"discriminator={args.discriminator}", *args.overrides]), args)
        record(per_seed, "adv", scores)
        first_grids.setdefault("adv", grids)
    for steps in STEP_COUNTS:
        save_side_by_side({f"{GRID_LABELS[k]}, {steps} step{'s' if steps > 1 else ''}": first_grids[k][steps] for k in MODELS},
                          out / f"samples_{steps}_steps.png")
    seeds = len(args.seeds)
    note = (f"Mean ± sample std over {seeds} training seed{'s' if seeds > 1 else ''} ({args.seeds}; the base is one "
            f"model). advtune.metrics.evaluate_digits: {args.samples} samples per cell from the same noise (seed "
            f"{SAMPLE_SEED}) vs all real images of digits {NEW_DIGITS}; FD, precision and recall (k=3) in the "
            f"independent digits classifier's features, FD (val. clf) in the validation classifier's (lower FD is "
            f"better; not comparable to Inception FID). Base trained on {BASE_DIGITS} for {args.base_steps} steps; "
            f"(b) and (c) {args.lora_steps} LoRA steps each, (c) adversarial after step "
            f"{args.adv_start if args.adv_start is not None else 'latent_adv_start_step of the experiment'}; "
            f"{args.discriminator} discriminator; extra overrides {args.overrides or 'none'}.")
    table = tables(per_seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + "\n\n" + note + "\n")
    (out / "results.json").write_text(json.dumps({"per_seed": per_seed, "args": vars(args)}, indent=2))
    print("\n" + table + "\n\n" + note)
    print(f"grids (seed {args.seeds[0]}): {out}/samples_*_steps.png   ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
