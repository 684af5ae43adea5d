"""The frozen Flux base as a LoRA trainer wants it: dtype, an 8-bit option, gradient checkpointing.

* ``base_dtype``: FLUX.1-dev's 11.9 B transformer parameters are 44.3 GiB in float32 and 22.2 GiB
  in bfloat16, so a real snapshot loads in bfloat16 by default (``None`` = bfloat16 for a
  snapshot, float32 for the tiny built or saved bases).
* ``quantize``: weight-only 8-bit linears in the transformer blocks through torchao
  (``Int8WeightOnlyConfig``: per-channel symmetric int8; ``Float8WeightOnlyConfig``: e4m3 with
  per-channel scales). About 11.2 GiB for FLUX.1-dev's blocks; the small embedders, norms and the
  output layer stay in ``base_dtype``. torchao is chosen over optimum-quanto because peft wraps
  torchao-quantized linears with LoRA natively (``peft.tuners.lora.torchao``), both modes run on
  a CPU (pure PyTorch ops), and it is maintained by the PyTorch team.
* LoRA factors are added afterwards and cast to float32: they train in float32 on top of a
  bfloat16 or 8-bit base (peft casts the layer input to the adapter's dtype and the sum back).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

__all__ = ["QUANTIZE_MODES", "BASE_DTYPES", "load_flux_base", "quantize_blocks", "output_layer_weight"]

QUANTIZE_MODES: tuple[str, ...] = ("int8", "fp8")
BASE_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")


def quantize_blocks(transformer: nn.Module, mode: str) -> int:
    """Quantize the ``nn.Linear`` weights of every transformer block in place; return how many."""
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"task.quantize must be one of {QUANTIZE_MODES} or null, got {mode!r}")
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    config = Int8WeightOnlyConfig(version=2) if mode == "int8" else Float8WeightOnlyConfig()
    count = 0
    for blocks in (transformer.transformer_blocks, transformer.single_transformer_blocks):
        count += sum(isinstance(m, nn.Linear) for m in blocks.modules())
        quantize_(blocks, config)
    return count


def load_flux_base(snapshot: str | None, pretrained_path: str | None, pretrained_subfolder: str | None,
                   transformer_config: dict[str, Any] | None, base_dtype: str | None = None,
                   quantize: str | None = None, gradient_checkpointing: bool = False) -> nn.Module:
    """The frozen base transformer from a FLUX.1 snapshot, a transformer directory, or a config.

    Args:
        snapshot: FLUX.1 snapshot root (``transformer/`` is loaded).
        pretrained_path, pretrained_subfolder: a transformer saved with ``save_pretrained``.
        transformer_config: kwargs of :func:`advtune.models.flux.build_flux_transformer`.
        base_dtype: one of :data:`BASE_DTYPES`, or ``None`` (bfloat16 for a snapshot, else float32).
        quantize: ``"int8"``, ``"fp8"`` or ``None``.
        gradient_checkpointing: recompute block activations in backward (diffusers' non-reentrant one).
    """
    from advtune.models.flux import build_flux_transformer, load_flux_transformer
    from advtune.models.flux_snapshot import check_flux_snapshot

    if snapshot is not None and pretrained_path is not None:
        raise ValueError("set either pretrained (a FLUX.1 snapshot) or task.pretrained_path (a transformer), not both")
    dtype = base_dtype or ("bfloat16" if snapshot is not None else "float32")
    if dtype not in BASE_DTYPES:
        raise ValueError(f"task.base_dtype must be one of {BASE_DTYPES} or null, got {dtype!r}")
    if snapshot is not None:
        root = check_flux_snapshot(snapshot, ("transformer", "vae"))
        transformer = load_flux_transformer(root, "transformer", torch_dtype=dtype)
    elif pretrained_path is not None:
        transformer = load_flux_transformer(pretrained_path, pretrained_subfolder, torch_dtype=dtype)
    else:
        transformer = build_flux_transformer(**dict(transformer_config or {}))
        if dtype != "float32":  # built in float32; cast only when asked (diffusers warns on every .to)
            transformer = transformer.to(getattr(torch, dtype))
    transformer.requires_grad_(False)
    if quantize is not None:
        with warnings.catch_warnings():  # torchao's notes on its own deprecations are not the user's business
            warnings.simplefilter("ignore", UserWarning)
            quantize_blocks(transformer, quantize)
    if gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    return transformer


def output_layer_weight(transformer: nn.Module, lycoris: nn.Module | None = None) -> nn.Parameter | None:
    """The trainable weight of the transformer's output layer ``proj_out``, or ``None`` if it has none.

    The adaptive weight of taming-transformers compares gradient norms at the generator's last
    layer: here peft's LoRA ``B`` of ``proj_out`` (the factor next to the output), LyCORIS's
    up/second factor of it, or ``proj_out.weight`` itself under full fine-tuning.
    """
    layer = transformer.proj_out
    lora_b = getattr(layer, "lora_B", None)
    if lora_b is not None and "default" in lora_b:
        return lora_b["default"].weight
    if getattr(layer, "weight", None) is not None and layer.weight.requires_grad:
        return layer.weight
    for module in (lycoris.loras if lycoris is not None else []):
        if module.org_module[0] is layer:
            factors = [p for p in module.parameters() if p.ndim >= 2 and p.requires_grad]
            return factors[-1] if factors else None
    return None
