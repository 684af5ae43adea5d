"""Few-step distillation on the CPU digits toy: does the student match its teacher? (issue 17's goals 1–2)

The tiny Flux base of ``make demo`` (``scripts/flux_demo.py``, trained on digits 0–4, cached in
``.demo_cache/``) is the teacher's base. Two cases, each over training seeds (``--seeds``):

* ``--case base``: the teacher is the base itself (adapters off), 0–4. Goals: the student's FD at
  2 steps within 1.15× of the teacher's at 32 steps, 4 steps within 1.05×, 1 step within 1.5×,
  precision and recall within 0.05.
* ``--case domain``: the teacher is the flow-matching LoRA on 5–9 of the same seed (the demo's (b),
  ``experiment=flux_lora_latent_adv use_latent_adv=false``, trained here when not cached), the
  student starts from it (``task.teacher_lora``). Goal: student FD at 2 steps <= the LoRA's at 8.

Every model is scored by :func:`advtune.metrics.evaluate_digits`: ``--samples`` samples from the same
noise (a seed no run trains or validates with) against all real images of the case's digits, in
the independent classifier's features. The teacher samples (``data=teacher_samples``) are cached in
``--out``/teacher_cache and shared by runs with the same teacher. Each run writes
``--out/runs/<label>_seeds<...>.json``; the table (mean ± sample std over every seed run so far under
that label, with the per-seed ratios) is printed and appended to ``--out/table.md``, so seeds may run
in parallel processes (``--seeds 1``, ``--seeds 2``...) and the last one prints all three.

    python benchmarks/bench_flux_distill.py --case base [--seeds 0 1 2]           # 8,000 updates, 32,768 samples
    python benchmarks/bench_flux_distill.py --case domain --out outputs/distill_domain   # 6,000, 16,384 per teacher
    python benchmarks/bench_flux_distill.py --case base --label paired task.student_input=paired  # a variant
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import flux_demo  # noqa: E402  (the demo's base, its LoRA runs and its noise seed)

DIGITS = {"base": [0, 1, 2, 3, 4], "domain": [5, 6, 7, 8, 9]}
STUDENT_STEPS = [1, 2, 4]
METRICS = [("independent/fd", "FD", 1), ("independent/precision", "precision", 3), ("independent/recall", "recall", 3)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(DIGITS), default="base")
    parser.add_argument("--out", default=None, help="default: outputs/distill_<case>")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="student updates per run (base 8000, domain 6000)")
    parser.add_argument("--teacher-samples", type=int, default=None,
                        help="teacher samples in the cache (base 32768, domain 16384 per teacher)")
    parser.add_argument("--samples", type=int, default=1000, help="samples per model and step count (>= 1000)")
    parser.add_argument("--teacher-steps", type=int, default=32)
    parser.add_argument("--label", default="student", help="row name of this variant")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a smoke run (tiny step counts; numbers meaningless)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the student runs, e.g. task.regression_weight=0")
    args = parser.parse_args(argv)
    args.out = Path(args.out or f"outputs/distill_{args.case}")
    args.steps = args.steps or {"base": 8000, "domain": 6000}[args.case]
    args.teacher_samples = args.teacher_samples or {"base": 32768, "domain": 16384}[args.case]
    args.min_samples, args.base_steps, args.lora_steps = 1000, 2000, 600
    args.cache, args.adv_start = str(ROOT / ".demo_cache"), None
    if args.quick:
        args.steps, args.teacher_samples, args.samples, args.min_samples = 8, 128, 64, 16
        args.base_steps, args.lora_steps, args.cache = 20, 10, str(args.out / "base_cache")
    return args


@torch.no_grad()
def score(sample, steps: list[int], args: argparse.Namespace) -> tuple[dict[int, dict], dict[int, torch.Tensor]]:
    """``evaluate_digits`` of ``sample(n, generator, steps)`` per step count, same noise for every model."""
    from advtune.metrics import evaluate_digits

    scores, grids = {}, {}
    for n in steps:
        images = sample(args.samples, torch.Generator().manual_seed(flux_demo.SAMPLE_SEED), n)
        scores[n] = evaluate_digits(images, digits=DIGITS[args.case], min_samples=args.min_samples)
        grids[n] = images[:64]
    return scores, grids


def teacher_lora(args: argparse.Namespace, base_dir: Path, seed: int) -> tuple[Path, object]:
    """The flow-matching LoRA on 5–9 of ``seed`` (the demo's (b)): its file and its module."""
    from advtune.runner import load_run

    run_dir = args.out / "teachers" / f"seed{seed}"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not (run_dir / "pytorch_lora_weights.safetensors").is_file():
        print(f"[seed {seed}] teacher: flow-matching LoRA on {DIGITS['domain']}, {args.lora_steps} steps")
        flux_demo.train_lora(args, base_dir, run_dir, seed, ["use_latent_adv=false"])
    return run_dir / "pytorch_lora_weights.safetensors", load_run(ckpt)[0]


def student(args: argparse.Namespace, base_dir: Path, seed: int, lora: Path | None):
    """One distillation run (``experiment=flux_lora_distill`` + overrides); its module, loaded."""
    from advtune.runner import load_run

    out = args.out / args.label / f"seed{seed}"
    ckpt = flux_demo.run(["experiment=flux_lora_distill", f"task.pretrained_path={base_dir}",
                          f"data.source.digits={DIGITS[args.case]}", f"seed={seed}", f"trainer.max_steps={args.steps}",
                          f"trainer.val_check_interval={args.steps}", "task.num_validation_samples=64",
                          f"checkpoint_every={args.steps}", f"task.teacher_steps={args.teacher_steps}",
                          f"data.num_samples={args.teacher_samples}", f"data.cache_dir={args.out / 'teacher_cache'}",
                          *([f"task.teacher_lora={lora}"] if lora else []), f"output_dir={out}", *args.overrides])
    return load_run(ckpt)[0]


def sampler(module, teacher: bool = False):
    """``(n, generator, steps) -> images`` of a run's module under its shipped (EMA) weights."""
    task = module.task.eval()

    def draw(n, generator, steps):
        with (module.generator_weights() if hasattr(module, "generator_weights") else contextlib.nullcontext()):
            if teacher:
                return task.teacher_sample(n, generator) if hasattr(task, "teacher_sample") else task.sample(n, generator, steps)
            return task.sample(n, generator, steps)
    return draw


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from advtune.console import quiet_dependencies

    quiet_dependencies()
    from advtune.tasks.flux_lora import FluxLoRATask
    from advtune.visualize import save_side_by_side

    torch.set_num_threads(args.threads)
    started = time.time()
    base_dir = flux_demo.base_model(args, args.out)
    rows: dict[str, dict[str, list[float]]] = {}
    timing: dict[str, list[float]] = {}

    def record(name: str, step_scores: dict[int, dict]) -> None:
        for n, values in step_scores.items():
            for metric, _, _ in METRICS:
                rows.setdefault(name, {}).setdefault(f"{metric}@{n}", []).append(values[metric])

    grids: dict[str, torch.Tensor] = {}
    if args.case == "base":  # one teacher for every seed: the base at teacher_steps (and at the student's counts)
        base = FluxLoRATask(pretrained_path=str(base_dir), rank=1)
        teacher_scores, teacher_grids = score(lambda n, g, s: base.sample(n, g, s), [*STUDENT_STEPS, 8, args.teacher_steps], args)
        for _ in args.seeds:
            record("teacher (base)", teacher_scores)
        grids[f"teacher, {args.teacher_steps} steps"] = teacher_grids[args.teacher_steps]
    for seed in args.seeds:
        lora = None
        if args.case == "domain":
            lora, fm_module = teacher_lora(args, base_dir, seed)
            fm_scores, fm_grids = score(sampler(fm_module), [*STUDENT_STEPS, 8, args.teacher_steps], args)
            record("teacher (flow-matching LoRA)", fm_scores)
            grids.setdefault(f"teacher, {args.teacher_steps} steps", fm_grids[args.teacher_steps])
            grids.setdefault("FM LoRA, 2 steps", fm_grids[2])
            grids.setdefault("FM LoRA, 8 steps", fm_grids[8])
        print(f"[seed {seed}] {args.label}: {args.steps} student updates, overrides {args.overrides or 'none'}")
        tick = time.time()
        module = student(args, base_dir, seed, lora)
        timing.setdefault("train_s", []).append(time.time() - tick)
        student_scores, student_grids = score(sampler(module), STUDENT_STEPS, args)
        record(args.label, student_scores)
        for n in STUDENT_STEPS:
            grids.setdefault(f"student, {n} step{'s' if n > 1 else ''}", student_grids[n])
    runs = args.out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    run = {"seeds": args.seeds, "rows": rows, "train_s": timing["train_s"], "args": {k: str(v) for k, v in vars(args).items()}}
    (runs / f"{args.label}_seeds{'-'.join(map(str, args.seeds))}.json").write_text(json.dumps(run, indent=2))
    save_side_by_side(grids, args.out / f"{args.label}_seed{args.seeds[0]}_grid.png")
    report(args)
    print(f"({time.time() - started:.0f} s) grids: {args.out / f'{args.label}_seed{args.seeds[0]}_grid.png'}")


def report(args: argparse.Namespace) -> None:
    """Merge every run of ``args.label`` in ``--out/runs``; print and append the table with per-seed ratios."""
    from advtune.metrics.seed_table import seed_table

    rows: dict[str, dict[str, list[float]]] = {}
    seeds, seconds = [], []
    for path in sorted((args.out / "runs").glob(f"{args.label}_seeds*.json")):
        run = json.loads(path.read_text())
        seeds += run["seeds"]
        seconds += run["train_s"]
        for name, cells in run["rows"].items():
            for column, values in cells.items():
                rows.setdefault(name, {}).setdefault(column, []).extend(values)
    counts = [*STUDENT_STEPS, 8, args.teacher_steps]
    columns = [f"{m}@{n}" for m, _, _ in METRICS for n in counts]
    titles = {f"{m}@{n}": f"{t} @ {n}" for m, t, _ in METRICS for n in counts}
    decimals = {f"{m}@{n}": d for m, _, d in METRICS for n in counts}
    table = seed_table(rows, columns, decimals, titles)
    teacher_row = next(name for name in rows if name.startswith("teacher"))
    reference = "independent/fd@8" if args.case == "domain" else f"independent/fd@{args.teacher_steps}"
    ratios = {n: [s / t for s, t in zip(rows[args.label][f"independent/fd@{n}"], rows[teacher_row][reference])]
              for n in STUDENT_STEPS}
    ratio_line = "; ".join(f"{n} step{'s' if n > 1 else ''}: " + " / ".join(f"{r:.2f}" for r in values)
                           for n, values in ratios.items())
    note = (f"{args.label} FD over the teacher's FD at {reference.split('@')[1]} steps, per seed {seeds}: {ratio_line}. "
            f"{args.samples} samples per cell from seed {flux_demo.SAMPLE_SEED} vs all real digits {DIGITS[args.case]}; "
            f"{args.steps} student updates ({sum(seconds) / len(seconds):.0f} s per run incl. validation, loaded CPU); "
            f"{args.teacher_samples} teacher samples at {args.teacher_steps} steps; overrides {args.overrides or 'none'}.")
    print("\n" + table + "\n\n" + note)
    with (args.out / "table.md").open("a") as handle:
        handle.write(f"\n## {args.label} (seeds {seeds})\n\n{table}\n\n{note}\n")


if __name__ == "__main__":
    main()
