"""Time and peak memory of a flow-matching LoRA step vs. a hybrid adversarial step, per discriminator.

Three configurations on the same tiny Flux base (the demo's: 2 + 2 blocks, width 64), LoRA, batch and optimizer settings:

* ``flow_matching`` — ``FluxLoRATask.generator_predict`` → diffusion loss → backward → Adam step;
* ``hybrid_latent`` — the same plus the adversarial generator term of a ``LatentDiscriminator`` and
  one discriminator update (hinge), the math ``AdversarialModule`` runs, as a plain loop;
* ``hybrid_flux_features`` — the same with ``FluxTransformer2DDiscriminator`` (heads on the frozen
  base's block features, adapters off: two extra transformer passes for D in each phase).

Memory: the peak of tensor memory allocated during one step above what was live when it began
(activations, gradients, optimizer temporaries), from the torch profiler's CPU memory events
(allocations attributed to ops, frees as ``[memory]`` events, summed in time order); plus the
process RSS added by *constructing* the discriminator (for the feature discriminator: heads only,
the base weights are shared). Each configuration runs in its own child process. Times are medians
per step after ``--warmup`` steps; ratios are against ``flow_matching`` measured in the same run.

    python benchmarks/bench_flux_lora.py [--steps 20] [--batch 64] [--size 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = ("flow_matching", "hybrid_latent", "hybrid_flux_features")
# The base of `configs/task/flux_lora.yaml` and of the demo: 2 double + 2 single blocks, width 64.
DEMO_BASE = {"num_layers": 2, "num_single_layers": 2, "num_attention_heads": 4, "attention_head_dim": 16, "seed": 0}


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def peak_step_memory_mib(step) -> float:
    """Peak tensor memory (MiB) allocated during ``step()`` above the level when it started."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    deltas = []
    for event in prof.events():
        # Ops carry their own (self) allocations; frees are reported as separate "[memory]" events.
        delta = event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        if delta:
            deltas.append((event.time_range.start, delta))
    level = peak = 0
    for _, delta in sorted(deltas):
        level += delta
        peak = max(peak, level)
    return peak / 2**20


def two_player_step(task, disc, calculator, g_opt, d_opt, batch: dict) -> None:
    """One generator update (flow matching, plus G's adversarial term when ``disc``) and one D update,
    the order ``AdversarialModule`` runs them in, as a plain loop."""
    out = task.generator_predict(batch)
    loss = out.base_loss
    if disc is not None:
        disc.requires_grad_(False)
        loss = calculator.compute_generator_loss(disc, out.real, out.fake, 0, base_loss=out.base_loss, **out.cond)["loss"]
        disc.requires_grad_(True)
    g_opt.zero_grad(set_to_none=True)
    loss.backward()
    g_opt.step()
    if disc is None:
        return
    g_params = list(task.trainable_parameters())
    for p in g_params:
        p.requires_grad_(False)
    d_loss = calculator.compute_discriminator_loss(disc, out.real.detach(), out.fake.detach(), 0, **out.cond)["loss"]
    d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    d_opt.step()
    for p in g_params:
        p.requires_grad_(True)


def run_one(config: str, steps: int, warmup: int, batch: int, size: int, threads: int) -> dict:
    """Set up one configuration, time its steps, measure its memory; runs inside a child process."""
    import torch

    from advtune.adversarial import AdversarialLossCalculator
    from advtune.discriminators.flux import FluxTransformer2DDiscriminator
    from advtune.discriminators.latent import LatentDiscriminator
    from advtune.tasks.flux_lora import FluxLoRATask

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    task = FluxLoRATask(rank=8, alpha=8.0, latent_size=size, transformer_config=DEMO_BASE)
    latents = torch.rand(batch, 1, size, size) * 2 - 1
    rss_before_disc = _rss_mib()
    disc = None
    if config == "hybrid_latent":
        disc = LatentDiscriminator(base_channels=32, num_layers=2)
    elif config == "hybrid_flux_features":
        disc = FluxTransformer2DDiscriminator(**task.discriminator_kwargs(), head_dim=64, embedding_dim=64)
    rss_added_by_disc = _rss_mib() - rss_before_disc
    calculator = AdversarialLossCalculator(loss_type="hinge", adversarial_weight=0.1)
    g_params = list(task.trainable_parameters())
    g_opt = torch.optim.Adam(g_params, lr=1e-3)
    d_opt = torch.optim.Adam(disc.parameters(), lr=2e-4) if disc is not None else None

    def step() -> None:
        two_player_step(task, disc, calculator, g_opt, d_opt, {"latents": latents})

    for _ in range(warmup):
        step()
    peak_memory = peak_step_memory_mib(step)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    base_params = sum(p.numel() for p in task.transformer.parameters() if not p.requires_grad)
    return {
        "config": config,
        "median_step_ms": 1000 * statistics.median(times),
        "peak_step_memory_mib": peak_memory,
        "rss_added_by_discriminator_mib": rss_added_by_disc,
        "generator_trainable": sum(p.numel() for p in g_params),
        "base_frozen": base_params,
        "discriminator_params": sum(p.numel() for p in disc.parameters()) if disc is not None else 0,
    }


def base_copy_check(threads: int) -> dict:
    """RSS added by building the feature discriminator on a mid-size base (~55 M parameters, ~210 MiB):
    a copy of the base would add ~210 MiB; sharing it adds only the heads. Runs in a child process."""
    import torch

    from advtune.adapters import add_adapter
    from advtune.discriminators.flux import FluxTransformer2DDiscriminator
    from advtune.models.flux import build_flux_transformer

    torch.set_num_threads(threads)
    base = build_flux_transformer(num_layers=4, num_single_layers=4, num_attention_heads=8, attention_head_dim=64,
                                  joint_attention_dim=64, pooled_projection_dim=64, axes_dims_rope=(16, 24, 24))
    add_adapter(base, "lora", rank=8)
    base_mib = sum(p.numel() * p.element_size() for p in base.parameters()) / 2**20
    before = _rss_mib()
    disc = FluxTransformer2DDiscriminator(base, head_dim=64, embedding_dim=64)
    built = _rss_mib() - before
    heads_mib = sum(p.numel() * p.element_size() for p in disc.parameters()) / 2**20
    return {"config": "base_copy_check", "base_mib": base_mib, "heads_mib": heads_mib, "rss_added_mib": built}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=8, help="latent side (8 or 16 for digits)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", choices=[*CONFIGS, "base_copy_check"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "base_copy_check":
        print(json.dumps(base_copy_check(args.threads)))
        return
    if args.child:
        print(json.dumps(run_one(args.child, args.steps, args.warmup, args.batch, args.size, args.threads)))
        return
    rows = []
    for config in [*CONFIGS, "base_copy_check"]:
        command = [sys.executable, __file__, "--child", config, "--steps", str(args.steps), "--warmup",
                   str(args.warmup), "--batch", str(args.batch), "--size", str(args.size), "--threads", str(args.threads)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    check = rows.pop()
    base = rows[0]
    print(f"Flux base of the demo ({base['base_frozen']:,} frozen params), LoRA r=8 ({base['generator_trainable']:,} trainable), "
          f"batch {args.batch} of 1×{args.size}×{args.size} latents, {args.threads} thread(s), median of {args.steps} steps")
    print(f"{'configuration':<22}{'step ms':>9}{'× time':>8}{'peak MiB':>10}{'× mem':>7}{'D params':>10}{'D build MiB':>13}")
    for row in rows:
        print(f"{row['config']:<22}{row['median_step_ms']:>9.1f}{row['median_step_ms'] / base['median_step_ms']:>8.2f}"
              f"{row['peak_step_memory_mib']:>10.1f}{row['peak_step_memory_mib'] / base['peak_step_memory_mib']:>7.2f}"
              f"{row['discriminator_params']:>10,}"
              f"{row['rss_added_by_discriminator_mib']:>13.2f}")
    print(f"feature D on a {check['base_mib']:.0f} MiB base: process RSS grew {check['rss_added_mib']:.1f} MiB when it was "
          f"built (its heads: {check['heads_mib']:.2f} MiB) — the base weights are shared, not copied")


if __name__ == "__main__":
    main()
