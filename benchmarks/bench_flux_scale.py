"""Seconds per step and peak memory of the Flux LoRA job at FLUX.1-dev's real width, with and without D.

FLUX.1-dev's transformer config (width 3,072, 24 heads, T5 width 4,096, CLIP 768, guidance
embedding) with random weights (nothing is downloaded), gradient checkpointing, peft LoRA rank 16
on the default targets, 512×512 images (64×64×16 latents = 1,024 image tokens) and 512 text
tokens, batch 1. Configurations (``--configs``, default all), each in its own child process:

* ``fm``: flow matching only (generator forward, MSE, backward, Adam);
* ``latent``: hybrid + the shipped latent D (``discriminator=latent``): G's adversarial term and one D update;
* ``feature``: hybrid + the feature D (``discriminator=flux_features``, heads of width 256 on blocks of the
  frozen base, adapters off: more transformer passes in both phases), its blocks checkpointed with the
  adapters off (the default when the base has gradient checkpointing);
* ``feature_full``: the same without that checkpointing (every block's activations kept, as before);
* ``distill``: a student update of ``experiment=flux_lora_distill`` (``FluxDistillTask``: one student
  forward at a sampler level, the regression to the cached teacher sample) + the latent D;
* ``distill_feature``: the same with the feature D (the teacher's own features, checkpointed: LADD);
* each with the base in ``--dtype`` and with an 8-bit (torchao int8 weight-only) base. The teacher's
  one-time sampling of the cache is not part of a student update (it is ``teacher_steps`` no-grad
  forwards per sample, reported apart as ``teacher_sample_s``).

On a GPU run it at full depth (``--double 19 --single 38``, bf16). On a CPU the default is one
double and one single block in float32 (bf16 matmuls run ~350× slower than float32 on CPUs without
bf16 instructions, e.g. this project's), and the script prints the per-block extrapolation to full
depth next to what it measured:

* time: a forward pass is timed block by block (hooks) in the ``fm`` child; every configuration's
  step time is scaled by ``(non-block + 19·double + 38·single) / (non-block + double + single)``,
  except the latent D's own cost (its extra time over ``fm`` is depth-independent);
* memory: peak memory of the step (GPU: ``max_memory_allocated``; CPU: peak process RSS, sampled
  every 20 ms) plus, per missing block, its weights (as stored: bf16 or int8 + scales), its LoRA
  state (float32 weights, gradients and two Adam moments) and the block input gradient
  checkpointing keeps; for the feature D also the measured extra peak per block (it runs the base
  without checkpointing). The bf16 column re-prices the float32 CPU run's weights and activations in bf16.

Times on a CPU are process CPU seconds (one thread), so other jobs on a shared machine barely move
them; on a GPU, wall seconds.

    python benchmarks/bench_flux_scale.py [--double 1 --single 1] [--steps 1 --warmup 1] [--dtype auto]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

FLUX_DEV = {"in_channels": 64, "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096,
            "pooled_projection_dim": 768, "guidance_embeds": True, "axes_dims_rope": (16, 56, 56)}
FULL_DEPTH = (19, 38)
MODES = ("fm", "latent", "feature", "feature_full", "distill", "distill_feature")
CONFIGS = [(mode, quant) for quant in ("none", "int8") for mode in MODES]
CHECKPOINTED_FEATURES, FULL_FEATURES, DEPTH_FREE_D = ("feature", "distill_feature"), ("feature_full",), ("latent", "distill")


def _nbytes(tensor) -> int:
    """Bytes a tensor really stores (torchao subclasses: their int8 data and scales)."""
    if hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(_nbytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


class _PeakRSS(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.running = 0, True

    def run(self) -> None:
        import resource

        while self.running:
            with open("/proc/self/statm") as handle:
                self.peak = max(self.peak, int(handle.read().split()[1]) * resource.getpagesize())
            time.sleep(0.02)


def run_one(mode: str, quant: str, args: argparse.Namespace) -> dict:
    import torch

    from advtune.adversarial import AdversarialLossCalculator
    from advtune.discriminators.flux import FluxTransformer2DDiscriminator
    from advtune.discriminators.latent import LatentDiscriminator
    from advtune.models.flux_base import load_flux_base
    from advtune.tasks.flux_distill import FluxDistillTask
    from advtune.tasks.flux_lora import FluxLoRATask
    from bench_flux_lora import two_player_step  # the benchmarks folder is the script's: on sys.path

    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if cuda else "float32")
    config = {**FLUX_DEV, "num_layers": args.double, "num_single_layers": args.single, "seed": None}
    torch.manual_seed(0)
    base = load_flux_base(None, None, None, config, dtype, None if quant == "none" else quant, gradient_checkpointing=True)
    # A distillation step with paired inputs: one student forward, as a flow-matching step has. The shipped
    # rollout inputs add the earlier steps of the student's own sampler without gradient: on average one
    # forward per sample for student_steps [1, 2, 4] (report() adds it from the measured forward time).
    kind = dict(student_input="paired") if mode.startswith("distill") else {}
    task = (FluxDistillTask if kind else FluxLoRATask)(transformer=base, rank=16, alpha=16.0, latent_channels=16,
                                                         latent_size=64, digits_metric=False, **kind).to(device)
    batch = {"latents": torch.randn(1, 16, 64, 64, device=device), "noise": torch.randn(1, 16, 64, 64, device=device),
             "prompt_embeds": torch.randn(1, 512, 4096, device=device), "pooled_prompt_embeds": torch.randn(1, 768, device=device)}
    disc = None
    if mode in ("latent", "distill"):
        disc = LatentDiscriminator(in_channels=16, base_channels=32, num_layers=2, embedding_dim=64).to(device)
    elif mode in (*CHECKPOINTED_FEATURES, *FULL_FEATURES):
        blocks = list(range(args.double + args.single))
        kwargs = {k: v for k, v in task.discriminator_kwargs().items() if k != "transformer"}  # the teacher
        disc = FluxTransformer2DDiscriminator(base, block_indices=blocks, head_dim=256, embedding_dim=256,
                                              gradient_checkpointing=mode not in FULL_FEATURES, **kwargs).to(device)
    calculator = AdversarialLossCalculator(loss_type="hinge", adversarial_weight=0.1)
    g_params = list(task.trainable_parameters())
    g_opt = torch.optim.Adam(g_params, lr=1e-4)
    d_opt = torch.optim.Adam(disc.parameters(), lr=2e-4) if disc is not None else None

    def step() -> None:
        two_player_step(task, disc, calculator, g_opt, d_opt, batch)
        if cuda:
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sampler = _PeakRSS()
    sampler.start()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    # CPU: the process's CPU time (one thread), which other jobs on a shared machine barely move; GPU: wall time.
    clock = time.perf_counter if cuda else time.process_time
    times = []
    for _ in range(args.steps):
        start = clock()
        step()
        times.append(clock() - start)
    sampler.running = False
    sampler.join()
    peak = torch.cuda.max_memory_allocated() if cuda else sampler.peak
    result = {"mode": mode, "quant": quant, "dtype": dtype, "device": device, "step_s": statistics.median(times),
              "peak_gib": peak / 2**30, "lora_params": sum(p.numel() for p in g_params),
              "weights_gib": sum(_nbytes(p) for p in base.parameters() if not p.requires_grad) / 2**30}
    blocks = {"double": base.transformer_blocks[0], "single": base.single_transformer_blocks[0]}
    for kind, block in blocks.items():
        frozen = [p for p in block.parameters() if not p.requires_grad]
        result[f"{kind}_weights_gib"] = sum(_nbytes(p) for p in frozen) / 2**30
        result[f"{kind}_weights_bf16_gib"] = sum(2 * p.numel() if quant == "none" else _nbytes(p) for p in frozen) / 2**30
        result[f"{kind}_lora_gib"] = 16 * sum(p.numel() for p in block.parameters() if p.requires_grad) / 2**30
    if mode == "fm":
        result["forward_s"] = _forward_profile(task, batch, blocks, cuda)
    if mode == "distill":  # the one-time sampling of the cache: one no-grad teacher step (x teacher_steps per sample)
        task.teacher_steps = 1
        start = clock()
        task.teacher_generate(batch["noise"], batch["prompt_embeds"], batch["pooled_prompt_embeds"])
        result["teacher_step_s"] = clock() - start
    return result


def _forward_profile(task, batch, blocks, cuda) -> dict:
    """Seconds of one no-grad forward: in each block kind (first block of each) and in total."""
    import torch

    spent, starts = {}, {}
    clock = time.perf_counter if cuda else time.process_time  # as the steps are timed

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def enter(kind):
        def hook(*_):  # returns None: the block's inputs stay as they are
            sync()
            starts[kind] = clock()
        return hook

    def leave(kind):
        def hook(*_):  # returns None: the block's output stays as it is
            sync()
            spent[kind] = clock() - starts[kind]
        return hook

    handles = []
    for kind, block in blocks.items():
        handles.append(block.register_forward_pre_hook(enter(kind)))
        handles.append(block.register_forward_hook(leave(kind)))
    with torch.no_grad():
        start = clock()
        task.generator_predict(batch)
        sync()
        spent["total"] = clock() - start
    for handle in handles:
        handle.remove()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--double", type=int, default=1, help="double-stream blocks (FLUX.1-dev: 19)")
    parser.add_argument("--single", type=int, default=1, help="single-stream blocks (FLUX.1-dev: 38)")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 on a GPU, float32 on a CPU")
    parser.add_argument("--rows", help="JSON file of measured rows: written after each child, re-read to report only")
    parser.add_argument("--configs", nargs="+", default=None, help="rows to measure, e.g. fm:none distill:int8 (default: all)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(*args.child.split(":"), args)))
        return
    saved = json.loads(Path(args.rows).read_text()) if args.rows and Path(args.rows).is_file() else []
    rows = {(row["mode"], row["quant"]): row for row in saved}
    wanted = [tuple(c.split(":")) for c in args.configs] if args.configs else CONFIGS
    wanted += [("fm", quant) for _, quant in wanted if ("fm", quant) not in wanted]  # every ratio's reference
    for mode, quant in [c for c in CONFIGS if c in wanted]:
        if (mode, quant) in rows:
            continue
        command = [sys.executable, __file__, "--child", f"{mode}:{quant}"] + [
            a for a in sys.argv[1:] if a not in (args.configs or [])and a != "--configs"]
        child = subprocess.run(command, capture_output=True, text=True)
        if child.returncode:
            sys.exit(f"{mode}/{quant} failed:\n{child.stderr[-3000:]}")
        rows[mode, quant] = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"measured {mode}/{quant}: {rows[mode, quant]['step_s']:.1f} s/step, {rows[mode, quant]['peak_gib']:.2f} GiB", flush=True)
        if args.rows:
            Path(args.rows).write_text(json.dumps(list(rows.values())))
    report({key: rows[key] for key in CONFIGS if key in rows and key in wanted}, args)


def report(rows: dict, args: argparse.Namespace) -> None:
    fm = rows["fm", "none"]
    forward = fm["forward_s"]
    extra_d, extra_s = FULL_DEPTH[0] - args.double, FULL_DEPTH[1] - args.single
    non_block = forward["total"] - args.double * forward["double"] - args.single * forward["single"]
    time_scale = (non_block + FULL_DEPTH[0] * forward["double"] + FULL_DEPTH[1] * forward["single"]) / forward["total"]
    print(f"\nFLUX.1-dev width, {args.double} double + {args.single} single blocks measured ({fm['dtype']}, {fm['device']}, "
          f"{args.threads} thread(s), median of {args.steps} steps), LoRA r=16 ({fm['lora_params']:,} params here), "
          f"1024 image + 512 text tokens, gradient checkpointing. Full depth = {FULL_DEPTH[0]} + {FULL_DEPTH[1]} blocks; "
          f"time scale ×{time_scale:.1f} from one forward: double {forward['double']:.2f} s, single "
          f"{forward['single']:.2f} s, rest {non_block:.2f} s.")
    print(f"{'config':<16}{'s/step':>9}{'× fm':>7}{'peak GiB':>10}{'× fm':>7} | {'full s/step':>12}{'× fm':>7}"
          f"{'full GiB':>10}{'× fm':>7}{'full GiB bf16':>15}")
    full = {}
    for (mode, quant), row in rows.items():
        reference = rows["fm", quant]
        # A latent D's own cost does not grow with depth: the fm-like part is scaled, its extra added as measured.
        seconds = row["step_s"] * time_scale if mode not in DEPTH_FREE_D else \
            reference["step_s"] * time_scale + (row["step_s"] - reference["step_s"])
        checkpoint_gib = 1536 * 3072 * (2 if row["dtype"] != "float32" else 4) / 2**30  # block input kept per block
        kept = 0.0
        if mode in FULL_FEATURES:  # G's backward through the uncheckpointed teacher keeps every block's activations
            kept = max(row["peak_gib"] - reference["peak_gib"], 0.0) / (args.double + args.single)
        elif mode in CHECKPOINTED_FEATURES:  # checkpointed: the teacher's block inputs, beside the generator's
            kept = checkpoint_gib
        per_block = {kind: row[f"{kind}_weights_gib"] + row[f"{kind}_lora_gib"] + checkpoint_gib + kept
                     for kind in ("double", "single")}
        memory = row["peak_gib"] + extra_d * per_block["double"] + extra_s * per_block["single"]
        as_bf16 = full_depth_bf16_gib(row, args) + (extra_d + extra_s) * kept / (2 if row["dtype"] == "float32" else 1)
        full[mode, quant] = (seconds, memory)
        base_seconds, base_memory = full.get(("fm", quant), (seconds, memory))
        print(f"{mode + '/' + quant:<16}{row['step_s']:>9.1f}{row['step_s'] / reference['step_s']:>7.2f}"
              f"{row['peak_gib']:>10.2f}{row['peak_gib'] / reference['peak_gib']:>7.2f} | {seconds:>12.1f}"
              f"{seconds / base_seconds:>7.2f}{memory:>10.1f}{memory / base_memory:>7.3f}{as_bf16:>15.1f}")
    if ("distill", "none") in rows:
        rollout = forward["total"] * time_scale * (0 + 0 + 1 + 0 + 1 + 2 + 3) / 7  # E[i] forwards over (k, i)
        print(f"distill rows use paired inputs; the shipped rollout inputs add on average one no-grad forward per "
              f"sample: {rollout:.0f} s at full depth, {rollout / full['fm', 'none'][0]:.2f}x fm (time only)")
        step = rows["distill", "none"]["teacher_step_s"]
        print(f"teacher sampling for the cache (one-time, not in a student update): {step:.1f} s per sample and teacher "
              f"step here, {step * time_scale:.0f} s at full depth, x28 steps = {28 * step * time_scale:.0f} s per sample "
              f"({'GPU' if fm['device'] == 'cuda' else 'CPU'}, {fm['dtype']})")
    print("goals: latent D <= 1.15x fm time and <= 1.05x memory; feature D <= 2.4x time; int8 latent-D job in 24 GB "
          "(22.4 GiB); a student update (distill) <= 1.5x fm time; teacher features (feature, checkpointed) <= 1.3x "
          "fm memory, with int8 too")


def full_depth_bf16_gib(row: dict, args: argparse.Namespace) -> float:
    """Full-depth memory with the base stored in bf16 (and int8 blocks when quantized): non-block
    weights in bf16, every block's stored weights and LoRA state, the measured activations (halved
    when measured in float32) and the block inputs gradient checkpointing keeps, in bf16."""
    halve = 2 if row["dtype"] == "float32" else 1
    block_weights = args.double * row["double_weights_gib"] + args.single * row["single_weights_gib"]
    non_block = (row["weights_gib"] - block_weights) / halve
    blocks = FULL_DEPTH[0] * row["double_weights_bf16_gib"] + FULL_DEPTH[1] * row["single_weights_bf16_gib"]
    lora_measured = args.double * row["double_lora_gib"] + args.single * row["single_lora_gib"]
    lora = FULL_DEPTH[0] * row["double_lora_gib"] + FULL_DEPTH[1] * row["single_lora_gib"]
    activations = max(row["peak_gib"] - row["weights_gib"] - lora_measured, 0.0) / halve
    kept_inputs = (sum(FULL_DEPTH) - args.double - args.single) * 1536 * 3072 * 2 / 2**30
    return non_block + blocks + lora + activations + kept_inputs


if __name__ == "__main__":
    main()
