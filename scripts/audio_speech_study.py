"""Staged adversarial stage vs more reconstruction, at equal wall time from a shared warm-up, on speech.

Per seed:

1. **warm-up** (shared, same cost for both arms): ``experiment=audio_vae_speech`` with the
   discriminator off for ``--warmup-steps`` generator updates; its exported VAE (``audio_vae.pt``)
   is where both arms start (``init_generator``);
2. **reconstruction arm**: ``--recon-steps`` more reconstruction-only updates;
3. **staged arm(s)**: the recipe's D-only steps, then adversarial steps, as many as cost the same
   time as the reconstruction arm: ``D-only x r_D + adversarial x r_adv = recon steps``;
4. both scored by ``advtune evaluate ... data=speech`` on the whole held-out clips.

``r_D`` and ``r_adv`` (a D-only and an adversarial step, in reconstruction steps) are measured side
by side in this process for each staged arm's own networks (``benchmarks/bench_audio_step.py``'s
parts, alternating rounds), because the load of a shared machine drifts too much over a run for
timings of separate runs to compare; with ``schedule.discriminator_every=k`` an adversarial step is
the generator's part plus ``1/k`` of a D step.

    python scripts/audio_speech_study.py --out DIR [--seeds 0 1 2] [--warmup-steps 2000]
        [--recon-steps 1200] [--shared 'OVERRIDES'] [--arm NAME 'OVERRIDES' ...] [--docs docs]

``--shared`` overrides apply to the warm-up and every arm, ``--arm`` adds a staged arm with its
own overrides (default: one arm ``staged``, the recipe as shipped). ``--docs DIR`` writes
``DIR/images/audio_speech_spectrograms.png`` and ``DIR/audio/*.wav`` (first seed, first arm).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

METRICS = ("pesq", "stoi", "mel_distance", "stft_distance", "si_sdr")
RECIPE = "experiment=audio_vae_speech"


def advtune(args: list[str], log: Path) -> float:
    """Run ``python -m advtune.cli ARGS`` with one thread, output to ``log``; return wall seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with open(log, "w") as handle:
        subprocess.run([sys.executable, "-m", "advtune.cli", *args], check=True, env=env,
                       stdout=handle, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def step_cost_ratios(overrides: list[str], rounds: int) -> dict[str, float]:
    """A D-only and an adversarial step of this config, in reconstruction steps (alternating rounds)."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_audio_step import median_times, parts

    from advtune.config import compose_config
    from advtune.runner import build

    torch.set_num_threads(1)
    cfg = compose_config([RECIPE, *overrides])
    module = build(cfg, with_data=False).module
    audio = 0.1 * torch.randn(int(cfg.data.batch_size), 1, round(cfg.data.segment_seconds * cfg.data.sample_rate))
    runs = parts(module.task, module.discriminator, audio, float(cfg.adversarial.feature_matching_weight))
    times = median_times({name: runs[name] for name in ("recon", "G adv + FM", "D step")}, rounds)
    every = int(cfg.schedule.get("discriminator_every", 1))
    return {"d_only": times["D step"] / times["recon"],
            "adversarial": (times["G adv + FM"] + times["D step"] / every) / times["recon"],
            "recon_s": times["recon"], "rounds": rounds}


def staged_steps(overrides: list[str], ratios: dict[str, float], recon_steps: int) -> tuple[int, int]:
    """(D-only batches, adversarial generator updates) costing ``recon_steps`` reconstruction steps."""
    from advtune.config import compose_config

    d_only = int(compose_config([RECIPE, *overrides]).schedule.discriminator_warmup_steps)
    return d_only, max(1, round((recon_steps - d_only * ratios["d_only"]) / ratios["adversarial"]))


def run_seed(args: argparse.Namespace, seed: int, results: dict) -> None:
    """Warm-up, the reconstruction arm and every staged arm of one seed, trained and evaluated."""
    common = [f"seed={seed}", "trainer.enable_progress_bar=false", *args.shared]
    warm = args.out / f"warm_seed{seed}"
    if f"warm_{seed}" not in results:
        interval = max(1, args.warmup_steps // 4)
        # The live weights at the end of the warm-up are the arms' common start (each arm keeps its own EMA).
        wall = advtune(["train", RECIPE, f"output_dir={warm}", "module.use_adversarial=false", "module.ema_decay=null",
                        f"trainer.max_steps={args.warmup_steps}", f"trainer.val_check_interval={interval}",
                        f"checkpoint_every={args.warmup_steps}", *common], args.out / f"warm_{seed}.log")
        results[f"warm_{seed}"] = {"wall_s": wall, "steps": args.warmup_steps, "curve": validation_curve(warm)}
    start = [f"init_generator={warm / 'audio_vae.pt'}", *common]
    # arm -> (overrides, generator updates, batches); validation once, at the last batch
    arms = {"recon": (["module.use_adversarial=false"], args.recon_steps, args.recon_steps)}
    for name, overrides in args.arm:
        d_only, adversarial = staged_steps([*args.shared, *overrides], results["cost"][name], args.recon_steps)
        arms[name] = (["schedule.adversarial_start_step=0", *overrides], adversarial, d_only + adversarial)
    for name, (overrides, steps, batches) in arms.items():
        run_dir, key = args.out / f"{name}_seed{seed}", f"{name}_{seed}"
        if key not in results:
            wall = advtune(["train", RECIPE, f"output_dir={run_dir}", f"trainer.max_steps={steps}",
                            f"trainer.val_check_interval={batches}", f"checkpoint_every={steps}", *start,
                            *overrides], args.out / f"{key}.log")
            results[key] = {"wall_s": wall, "steps": steps}
        table = run_dir / "evaluation" / "evaluation.json"
        if not table.exists():
            advtune(["evaluate", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "data=speech",
                     f"out_dir={run_dir / 'evaluation'}"], args.out / f"eval_{key}.log")
        results[key]["metrics"] = json.loads(table.read_text())["mean"]
        save(args.out, results)


def validation_curve(run_dir: Path) -> list[dict[str, float]]:
    """The run's validation rows (step, PESQ, mel distance, ...) from its ``metrics.csv``."""
    import csv

    with open(run_dir / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("val/mel_distance")]
    return [{"step": int(row["step"]), **{k[4:]: float(v) for k, v in row.items() if k.startswith("val/") and v}}
            for row in rows]


def save(out: Path, results: dict) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2))


def print_table(results: dict, arms: list[str], seeds: list[int]) -> None:
    """Markdown table: one row per arm, each metric as ``seed values (mean ± std)``."""
    for seed in seeds:
        for row in results.get(f"warm_{seed}", {}).get("curve", []):
            print(f"warm-up seed {seed} step {row['step']}: " + ", ".join(f"{m} {row[m]:.3f}" for m in METRICS if m in row))
    for name in arms[1:]:
        cost = results["cost"][name]
        print(f"{name}: step cost in reconstruction steps ({cost['rounds']} alternating rounds): "
              f"D-only {cost['d_only']:.2f}, adversarial {cost['adversarial']:.2f}")
    print(f"| arm | steps | wall s | {' | '.join(METRICS)} |")
    print("|---" * (3 + len(METRICS)) + "|")
    for name in arms:
        rows = [results[f"{name}_{seed}"] for seed in seeds if "metrics" in results.get(f"{name}_{seed}", {})]
        if not rows:
            continue
        cells = []
        for metric in METRICS:
            values = [row["metrics"][metric] for row in rows]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(" / ".join(f"{v:.3f}" for v in values) + f" ({statistics.mean(values):.3f}{spread})")
        steps = " / ".join(str(row["steps"]) for row in rows)
        walls = " / ".join(f"{row['wall_s']:.0f}" for row in rows)
        print(f"| {name} | {steps} | {walls} | {' | '.join(cells)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--warmup-steps", type=int, default=3000, help="shared reconstruction warm-up")
    parser.add_argument("--recon-steps", type=int, default=1200, help="reconstruction arm after the warm-up")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds of the step-cost measurement")
    parser.add_argument("--shared", type=shlex.split, default=[], help="overrides of the warm-up and every arm")
    parser.add_argument("--arm", nargs=2, action="append", metavar=("NAME", "OVERRIDES"),
                        help="a staged arm and its overrides (repeatable)")
    parser.add_argument("--docs", type=Path, help="write the spectrogram PNG and WAV examples here")
    args = parser.parse_args()
    args.arm = [(name, shlex.split(text)) for name, text in (args.arm or [("staged", "")])]
    args.out.mkdir(parents=True, exist_ok=True)
    results = json.loads((args.out / "results.json").read_text()) if (args.out / "results.json").exists() else {}
    results.setdefault("cost", {})
    for name, overrides in args.arm:
        if name not in results["cost"]:
            results["cost"][name] = step_cost_ratios([*args.shared, *overrides], args.rounds)
            save(args.out, results)
    for seed in args.seeds:
        run_seed(args, seed, results)
    arms = ["recon", *(name for name, _ in args.arm)]
    print_table(results, arms, args.seeds)
    if args.docs:
        from audio_speech_examples import write_examples

        write_examples(args.out, args.seeds[0], arms[1], args.docs)


if __name__ == "__main__":
    main()
