"""An estimate, before launching, of a Flux LoRA job's peak GPU memory and step time (``advtune validate-config``).

Not a measurement: a linear model calibrated on ``benchmarks/bench_flux_scale.py`` (FLUX.1-dev's width
and config with random weights, LoRA rank 16, 512×512 px = 1,024 image + 512 text tokens, batch 1,
gradient checkpointing, measured on CPU at 1 + 1 blocks and extrapolated to 19 + 38; docs/quickstart/FLUX.md
§3). Its full-depth peaks in a bf16 base were 24.5 GiB (flow matching), 24.6 (+ latent D), 33.4
(+ feature D keeping every block's activations); with int8 blocks 13.7, 13.8, 31.8; the feature D
recomputed in backward (its default when the base checkpoints) added 0.4 GiB (0.6 over int8 blocks).
The model splits them into

* the base's weights, counted from the snapshot's transformer config: bf16/fp16 2 bytes per
  parameter, float32 4; ``int8``/``fp8`` (torchao weight-only) 1 byte per block linear weight plus a
  bf16 scale per output row, the rest bf16;
* the LoRA's float32 weights, gradients and two Adam moments (16 bytes per parameter; + 4 for the EMA);
* activations: the bench's remainder (1.36 GiB bf16, 1.57 GiB over int8 blocks) scaled by
  tokens × width × depth × batch; without gradient checkpointing every block keeps its activations
  (0.156 GiB per block at 1,536 tokens, the feature D's measured extra per block);
* the latent D: 0.1 GiB per 1,024 image tokens and sample; the feature D, checkpointed: 0.4 GiB
  (0.6 over 8-bit blocks) per 57 blocks it reads at the anchor; not checkpointed, every block it reads
  keeps its activations and, over an 8-bit base, 9.2 GiB per 57 blocks of dequantized weights.

Step time: FLOPs of a forward pass (block linears: each double-block stream sees its own tokens,
single blocks all tokens; attention 4·T²·width per block) × 2 (backward to the inputs; LoRA
gradients are small) + 1 more with checkpointing (the recomputation), times the bench's ratios
(latent D 1.00×, feature D 2.54× checkpointed or 2.36× not, int8 1.08× on CPU; a distillation update
with rollout inputs 1.32×: its sampler's earlier steps; the one-time teacher sampling is not included),
at an assumed 40 % of a card's dense bf16 peak.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FluxJob", "estimate_memory_gib", "estimate_step_seconds", "job_from_config", "estimate_lines"]

_GIB = 2**30
_ANCHOR_TOKENS, _ANCHOR_WIDTH, _ANCHOR_BLOCKS = 1536, 3072, 57
_ACTIVATIONS_GIB = {"none": 1.36, "int8": 1.57, "fp8": 1.57}  # bench remainder at the anchor, checkpointing on
_BLOCK_ACTIVATIONS_GIB = 0.156   # one block's kept activations at the anchor (feature D's extra per block)
_LATENT_D_GIB = 0.1               # per 1,024 image tokens and sample
_DEQUANTIZED_GIB = 9.2            # 8-bit base + feature D: dequantized weights kept, all 57 blocks read
_CHECKPOINTED_FEATURE_GIB = {"none": 0.4, "int8": 0.6, "fp8": 0.6}  # per 57 blocks at the anchor
_TIME_RATIO = {"fm": 1.0, "latent": 1.0, "feature": 2.36, "feature_checkpointed": 2.54}
_ROLLOUT_TIME = 1.32              # distillation, student_input=rollout: + the sampler's earlier no-grad forwards
_TASKS = ("advtune.tasks.flux_lora.FluxLoRATask", "advtune.tasks.flux_distill.FluxDistillTask")
_QUANT_TIME = {"none": 1.0, "int8": 1.08, "fp8": 1.08}   # fp8 assumed like int8 (not benched)
_CARDS = {"A100": 312e12, "H100": 989e12}                # dense bf16 tensor FLOP/s
_UTILIZATION = 0.4
_CARD_MARGIN_GIB = 1.0            # CUDA context and allocator slack a card must also hold


@dataclass(frozen=True)
class FluxJob:
    """What decides the footprint. ``double_params``/``single_params``/``other_params``: base parameters
    per part; ``block_rows``/``block_linear_params``: the block linears 8-bit quantization stores."""

    double_params: int
    single_params: int
    other_params: int
    block_linear_params: int
    block_rows: int
    num_double: int
    num_single: int
    width: int
    lora_params: int
    image_tokens: int
    text_tokens: int
    batch_size: int = 1
    base_dtype: str = "bfloat16"
    quantize: str = "none"
    checkpointing: bool = True
    discriminator: str = "latent"   # fm (none) | latent | feature
    feature_blocks: int = 0          # blocks the feature D runs through
    ema: bool = False
    feature_checkpointing: bool = False  # the feature D's blocks recomputed in backward
    rollout: bool = False            # a distillation student update with rollout inputs


def estimate_memory_gib(job: FluxJob) -> dict[str, float]:
    """Peak GPU memory parts in GiB: ``weights``, ``lora``, ``activations``, ``discriminator``, ``total``."""
    params = job.double_params + job.single_params + job.other_params
    if job.quantize in ("int8", "fp8"):
        weights = (params - job.block_linear_params) * 2 + job.block_linear_params + job.block_rows * 2
    else:
        weights = params * {"float32": 4, "bfloat16": 2, "float16": 2}[job.base_dtype]
    blocks = job.num_double + job.num_single
    scale = (job.image_tokens + job.text_tokens) * job.width / (_ANCHOR_TOKENS * _ANCHOR_WIDTH) * job.batch_size
    activations = _ACTIVATIONS_GIB[job.quantize] * scale * blocks / _ANCHOR_BLOCKS
    if not job.checkpointing:
        kept_inputs = blocks * (job.image_tokens + job.text_tokens) * job.width * 2 * job.batch_size / _GIB
        activations += blocks * _BLOCK_ACTIVATIONS_GIB * scale - kept_inputs
    disc = 0.0
    if job.discriminator == "latent":
        disc = _LATENT_D_GIB * job.image_tokens / 1024 * job.batch_size
    elif job.discriminator == "feature" and job.feature_checkpointing:
        disc = _CHECKPOINTED_FEATURE_GIB[job.quantize] * job.feature_blocks / _ANCHOR_BLOCKS * scale
    elif job.discriminator == "feature":
        disc = job.feature_blocks * _BLOCK_ACTIVATIONS_GIB * scale
        if job.quantize in ("int8", "fp8"):
            disc += _DEQUANTIZED_GIB * job.feature_blocks / _ANCHOR_BLOCKS * job.width**2 / _ANCHOR_WIDTH**2
    parts = {"weights": weights / _GIB, "lora": job.lora_params * (20 if job.ema else 16) / _GIB,
             "activations": activations, "discriminator": disc}
    return {**parts, "total": sum(parts.values())}


def estimate_step_seconds(job: FluxJob) -> dict[str, float]:
    """``tflop`` per step and the seconds on each reference card at the assumed utilization."""
    tokens = job.image_tokens + job.text_tokens
    forward = job.double_params * tokens + 2 * job.single_params * tokens  # 2 FLOPs per weight and token it sees
    forward += 4 * tokens**2 * job.width * (job.num_double + job.num_single)
    flops = forward * (3 if job.checkpointing else 2) * job.batch_size
    kind = "feature_checkpointed" if job.discriminator == "feature" and job.feature_checkpointing else job.discriminator
    flops *= _TIME_RATIO[kind] * _QUANT_TIME[job.quantize] * (_ROLLOUT_TIME if job.rollout else 1.0)
    return {"tflop": flops / 1e12, **{card: flops / (_UTILIZATION * peak) for card, peak in _CARDS.items()}}


def job_from_config(cfg: Any, lora_params: int) -> FluxJob | None:
    """The :class:`FluxJob` of a composed config with a FLUX.1 snapshot (``None`` for any other job)."""
    import torch
    from diffusers import FluxTransformer2DModel
    from omegaconf import OmegaConf

    snapshot = cfg.get("pretrained")
    task = cfg.get("task") or {}
    if not snapshot or task.get("_target_") not in _TASKS or task.get("adapter_type") == "none":
        return None  # a FLUX.1 adapter job (LoRA or distillation) only
    config = json.loads((Path(str(snapshot)).expanduser() / "transformer" / "config.json").read_text())
    with torch.device("meta"):  # shapes only: nothing allocated
        model = FluxTransformer2DModel.from_config(config)
    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    linears = [m for block in blocks for m in block.modules() if isinstance(m, torch.nn.Linear)]
    double = sum(p.numel() for p in model.transformer_blocks.parameters())
    single = sum(p.numel() for p in model.single_transformer_blocks.parameters())
    resolution = int(OmegaConf.select(cfg, "data.resolution", default=None) or task.get("validation_resolution") or 512)
    disc_target = str(OmegaConf.select(cfg, "discriminator._target_", default="") or "")
    use_d = bool(OmegaConf.select(cfg, "module.use_adversarial", default=True)) and bool(disc_target)
    kind = "fm" if not use_d else "feature" if disc_target.endswith("FluxTransformer2DDiscriminator") else "latent"
    indices = OmegaConf.select(cfg, "discriminator.block_indices", default=None)
    feature_checkpointing = OmegaConf.select(cfg, "discriminator.gradient_checkpointing", default=None)
    checkpointing = bool(task.get("gradient_checkpointing"))
    return FluxJob(double, single, sum(p.numel() for p in model.parameters()) - double - single,
                   sum(m.weight.numel() for m in linears), sum(m.weight.shape[0] for m in linears),
                   len(model.transformer_blocks), len(model.single_transformer_blocks),
                   int(config["num_attention_heads"]) * int(config["attention_head_dim"]), int(lora_params),
                   (resolution // 16) ** 2, int(OmegaConf.select(cfg, "data.max_sequence_length", default=512) or 512),
                   int(OmegaConf.select(cfg, "data.batch_size", default=1) or 1), str(task.get("base_dtype") or "bfloat16"),
                   str(task.get("quantize") or "none"), checkpointing, kind,
                   (max(indices) + 1) if indices else len(blocks), OmegaConf.select(cfg, "module.ema_decay") is not None,
                   checkpointing if feature_checkpointing is None else bool(feature_checkpointing),
                   task.get("student_input") == "rollout")


def estimate_lines(cfg: Any, lora_params: int) -> list[str]:
    """What ``validate-config`` prints for a FLUX.1 job: inputs, memory, time, which cards fit (else ``[]``)."""
    import dataclasses

    job = job_from_config(cfg, lora_params)
    if job is None:
        return []
    memory, time = estimate_memory_gib(job), estimate_step_seconds(job)
    side = int(job.image_tokens**0.5) * 16
    disc = {"fm": "none", "latent": "latent", "feature": f"flux_features ({job.feature_blocks} blocks)"}[job.discriminator]
    fits = []
    for card in (24, 40, 80):
        usable = card * 1e9 / _GIB - _CARD_MARGIN_GIB
        if memory["total"] <= usable:
            fits.append(f"{card} GB yes")
            continue
        hint = "no"
        if job.quantize == "none":
            smaller = estimate_memory_gib(dataclasses.replace(job, quantize="int8"))["total"]
            hint = f"no (task.quantize=int8: ~{smaller:.1f} GiB)" if smaller <= usable else "no"
        fits.append(f"{card} GB {hint}")
    from advtune.console import human_count

    params = human_count(job.double_params + job.single_params + job.other_params)
    return [
        "estimate, not a measurement (advtune.flux_estimate, calibrated on benchmarks/bench_flux_scale.py; no GPU run):",
        f"  inputs: transformer {params} params ({job.num_double} + {job.num_single} blocks, width {job.width}), "
        f"~{side}x{side} px = {job.image_tokens} image + {job.text_tokens} text tokens, batch {job.batch_size}, "
        f"base {job.base_dtype}{'' if job.quantize == 'none' else ' + ' + job.quantize + ' blocks'}, gradient "
        f"checkpointing {'on' if job.checkpointing else 'off'}, {human_count(job.lora_params)} adapter params"
        f"{' + EMA' if job.ema else ''}, discriminator {disc}",
        f"  peak GPU memory ~{memory['total']:.3g} GiB: weights {memory['weights']:.3g} + adapter state "
        f"{memory['lora']:.3g} + activations {memory['activations']:.3g} + discriminator {memory['discriminator']:.3g}",
        f"  step time ~{time['H100']:.2g} s on an H100, ~{time['A100']:.2g} s on an A100 ({time['tflop']:.3g} TFLOP per step "
        f"at an assumed {_UTILIZATION:.0%} of dense bf16 peak)",
        f"  cards (less {_CARD_MARGIN_GIB:.0f} GiB for the CUDA context): {' | '.join(fits)}",
    ]
