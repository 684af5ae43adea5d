"""``advtune generate``: images from a local FLUX.1 snapshot and a LoRA file, through diffusers' FluxPipeline.

Nothing here is advtune's own sampler: the snapshot is loaded by ``FluxPipeline.from_pretrained``; a
diffusers/peft LoRA by ``load_lora_weights`` and scaled by ``set_adapters``, a LyCORIS file (LoKr,
LoHa; told by its keys or header) by the ``lycoris`` package (``create_lycoris_from_weights``,
``apply_to``, ``set_multiplier``), exactly as their users would (:mod:`advtune.adapter_files`), so
what this command shows is what anyone loading the file gets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advtune.commands import key_values
from advtune.config import ConfigError

__all__ = ["HELP", "DEFAULTS", "main", "parse_arguments"]

HELP = """usage: advtune generate pretrained=DIR lora=FILE prompt=TEXT [key=value ...]

Render PNGs with diffusers' FluxPipeline from a local FLUX.1 snapshot and a LoRA file written by
`advtune train` (output_dir/pytorch_lora_weights.safetensors or output_dir/lora/stepNNNNNN/...).

  pretrained=DIR          FLUX.1 snapshot root (model_index.json, transformer/, vae/, text encoders...)
  lora=FILE               adapter safetensors: diffusers/peft LoRA or LyCORIS (LoKr, LoHa); lora=none: the base
  prompt=TEXT             the prompt (quote it: prompt="a cat, sks style")
  num_steps=4             Euler steps of the pipeline's scheduler (a distilled LoRA's recommended count when not given)
  out_dir=generated       where the PNGs go: 000.png, 001.png, ...
  lora_scale=1.0          strength of the LoRA (0: the base)
  seed=0                  image i uses seed + i
  num_images=1            images per prompt
  height=, width=         pixels, multiples of 16 (default: the pipeline's, 1024 for FLUX.1)
  guidance_scale=3.5      FLUX.1-dev's embedded guidance (a distilled LoRA's recommended one when not given)
  max_sequence_length=512 T5 tokens (FLUX.1-schnell: 256)
  device=auto             auto: cuda when available, else cpu
  dtype=auto              auto: bfloat16 on cuda, float32 on cpu

example:
  advtune generate pretrained=/models/FLUX.1-dev lora=outputs/style/pytorch_lora_weights.safetensors \\
      prompt="a cat, sks style" num_steps=4 out_dir=outputs/style/generated"""

#: Every argument with its default (``None``: required or the pipeline's own default).
DEFAULTS: dict[str, Any] = {
    "pretrained": None, "lora": None, "prompt": None, "num_steps": 4, "out_dir": "generated",
    "lora_scale": 1.0, "seed": 0, "num_images": 1, "height": None, "width": None, "guidance_scale": 3.5,
    "max_sequence_length": 512, "device": "auto", "dtype": "auto",
}
_INTEGERS = ("num_steps", "seed", "num_images", "height", "width", "max_sequence_length")
_FLOATS = ("lora_scale", "guidance_scale")
_DTYPES = ("auto", "float32", "bfloat16", "float16")


def parse_arguments(overrides: list[str]) -> dict[str, Any]:
    """``key=value`` strings → checked arguments; a bad one raises :class:`ConfigError` (one line)."""
    args = dict(DEFAULTS)
    for key, value in key_values(overrides, DEFAULTS, "generate: "):
        try:
            args[key] = int(value) if key in _INTEGERS else float(value) if key in _FLOATS else value
        except ValueError:
            kind = "an integer" if key in _INTEGERS else "a number"
            raise ConfigError(f"generate: {key}={value!r} is not {kind}") from None
    for key in ("pretrained", "lora", "prompt"):
        if not args[key]:
            raise ConfigError(f"generate: {key}=... is required (advtune generate --help)")
    for key in ("num_steps", "num_images"):
        if args[key] < 1:
            raise ConfigError(f"generate: {key} must be >= 1, got {args[key]}")
    for key in ("height", "width"):
        if args[key] is not None and (args[key] < 16 or args[key] % 16):
            raise ConfigError(f"generate: {key} must be a positive multiple of 16, got {args[key]}")
    if args["dtype"] not in _DTYPES:
        raise ConfigError(f"generate: dtype must be one of {', '.join(_DTYPES)}, got {args['dtype']!r}")
    if args["lora"] != "none" and not Path(args["lora"]).expanduser().is_file():
        raise ConfigError(f"generate: LoRA file not found: {args['lora']}")
    return args


def main(overrides: list[str]) -> None:
    """Render ``num_images`` PNGs of ``prompt`` into ``out_dir`` (see :data:`HELP`)."""
    import torch
    from diffusers import FluxPipeline

    from advtune.console import quiet_model_loading
    from advtune.models.flux_snapshot import check_flux_snapshot

    args = parse_arguments(overrides)
    try:
        snapshot = check_flux_snapshot(args["pretrained"])
    except FileNotFoundError as error:
        raise ConfigError(f"generate: {error}") from None
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args["device"] == "auto" else args["device"]
    dtype = getattr(torch, args["dtype"]) if args["dtype"] != "auto" else (
        torch.bfloat16 if device.startswith("cuda") else torch.float32)
    quiet_model_loading()
    pipeline = FluxPipeline.from_pretrained(str(snapshot), torch_dtype=dtype, local_files_only=True).to(device)
    if args["lora"] != "none":
        from advtune.adapter_files import load_adapter_file

        lora = Path(args["lora"]).expanduser()
        try:
            load_adapter_file(pipeline, lora, float(args["lora_scale"]))
        except (ValueError, RuntimeError, KeyError) as error:
            raise ConfigError(f"generate: {lora} does not fit the snapshot {snapshot}: {str(error).splitlines()[0]}") from None
        _recommended_settings(lora, args, {item.partition("=")[0] for item in overrides})
    generators = [torch.Generator().manual_seed(args["seed"] + i) for i in range(args["num_images"])]
    images = pipeline(
        args["prompt"], num_inference_steps=args["num_steps"], guidance_scale=args["guidance_scale"],
        height=args["height"], width=args["width"], num_images_per_prompt=args["num_images"],
        generator=generators, max_sequence_length=args["max_sequence_length"],
    ).images
    out = Path(args["out_dir"]).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        image.save(out / f"{index:03d}.png")
    print(f"wrote {len(images)} image(s) to {out} ({args['num_steps']} steps, lora_scale={args['lora_scale']})")


def _recommended_settings(lora: Path, args: dict[str, Any], given: set[str]) -> None:
    """Take the step count and guidance a distilled LoRA recommends in its header, unless given."""
    from safetensors import safe_open

    with safe_open(str(lora), "pt") as handle:
        header = handle.metadata() or {}
    for key, entry, kind in (("num_steps", "advtune_recommended_num_steps", int),
                             ("guidance_scale", "advtune_recommended_guidance_scale", float)):
        if key not in given and entry in header:
            args[key] = kind(header[entry])
            print(f"{key}={args[key]} (recommended by {lora.name})")
