"""Defaults a run takes from its base model: the FLUX.1 profile (root key ``profile``, default ``auto``).

With ``pretrained=`` a FLUX.1 snapshot and a Flux adapter job (``task=flux_lora`` with an adapter, or the
distillation job ``task=flux_distill``),
:func:`apply_profile` replaces the digits toy's defaults by those the FLUX.1 LoRA trainers users
know ship, each with its source (:data:`FLUX1_PROFILE`, rendered into docs/OPTIONS.md). Keys the
user sets on the command line always win; ``profile=none`` keeps the experiment's own values. The
profile is ``flux1-dev`` for a guidance-distilled snapshot (``guidance_embeds``), else
``flux1-schnell``; the header line names it.

The training shift is resolution-dependent: FluxPipeline's own sampling shift at the training
resolution, ``exp(μ)`` with ``μ`` linear in the image-token count between the scheduler's
``(base_image_seq_len, base_shift)`` and ``(max_image_seq_len, max_shift)`` (FLUX.1-dev: 1.88 at
512 px, 3.16 at 1024 px), as kohya's ``--timestep_sampling flux_shift``; kohya's fixed 3.1582 is
this value at 1024 px.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["ProfileValue", "FLUX1_PROFILE", "snapshot_profile", "schedule_shift", "profile_values", "apply_profile",
           "PROFILE_NAMES"]

PROFILE_NAMES = ("flux1-dev", "flux1-schnell")
_FLUX_TASKS = {"advtune.tasks.flux_lora.FluxLoRATask": "lora", "advtune.tasks.flux_distill.FluxDistillTask": "distill"}
_LORA = ("lora",)
_DIFFUSERS = "diffusers train_dreambooth_lora_flux.py"
_AI_TOOLKIT = "ai-toolkit config/examples/train_lora_flux_24gb.yaml"
_SIMPLETUNER = "SimpleTuner config/examples/flux.peft-lora + quickstart/FLUX.md"
_KOHYA = "kohya sd-scripts README (FLUX.1 LoRA training)"


@dataclass(frozen=True)
class ProfileValue:
    """One default of the profile.

    Args:
        key: dotted config key (skipped when the composed config has no such key).
        dev, schnell: the value for each profile (``None``: that profile leaves the key alone); a
            callable gets the snapshot's scheduler config and the training resolution.
        shown: how the docs show the value.
        source: where users know it from.
        lora_only: only for ``task.adapter_type=lora`` (LyCORIS types keep the experiment's lr and rank).
        jobs: the jobs it applies to: ``"lora"`` (the flow-matching/latent-adversarial LoRA job),
            ``"distill"`` (few-step distillation, whose rank, length and adversarial weights are its own).
    """

    key: str
    dev: Any
    schnell: Any
    shown: str
    source: str
    lora_only: bool = False
    jobs: tuple[str, ...] = ("lora", "distill")


def schedule_shift(scheduler_config: dict, image_tokens: int) -> float:
    """The time shift ``FluxPipeline`` samples with: ``exp(μ)``, μ linear in the image token count
    between ``(base_image_seq_len, base_shift)`` and ``(max_image_seq_len, max_shift)`` when
    ``use_dynamic_shifting`` (FLUX.1-dev: 0.5 at 256 tokens, 1.15 at 4096), else ``shift``.

    ``exp(μ)/(exp(μ) + 1/t − 1)`` equals :func:`~advtune.tasks.flow_matching.shift_sigmas` with
    ``shift = exp(μ)``, so validation samples on the pipeline's own sigmas.
    """
    if not scheduler_config.get("use_dynamic_shifting"):
        return float(scheduler_config.get("shift", 1.0))
    x0, x1 = scheduler_config.get("base_image_seq_len", 256), scheduler_config.get("max_image_seq_len", 4096)
    y0, y1 = scheduler_config.get("base_shift", 0.5), scheduler_config.get("max_shift", 1.15)
    return math.exp(y0 + (y1 - y0) / (x1 - x0) * (image_tokens - x0))


def _training_shift(scheduler_config: dict, resolution: int) -> float:
    return round(schedule_shift(scheduler_config, (resolution // 16) ** 2), 3)  # 8× VAE, 2×2 packing


FLUX1_PROFILE: tuple[ProfileValue, ...] = (
    ProfileValue("module.generator_optimizer.lr", 1.0e-4, 1.0e-4, "1e-4",
                 f"{_DIFFUSERS} (`--learning_rate` default), {_AI_TOOLKIT} (`lr`), {_SIMPLETUNER}, {_KOHYA}", True),
    ProfileValue("task.rank", 16, 16, "16", f"{_AI_TOOLKIT} (`linear: 16`), {_SIMPLETUNER} (`lora_rank`); "
                 "diffusers' default and kohya's example use 4", True, _LORA),
    ProfileValue("task.alpha", 16.0, 16.0, "16", f"{_AI_TOOLKIT} (`linear_alpha: 16`), {_SIMPLETUNER} (`lora_alpha`)", True,
                 _LORA),
    ProfileValue("task.timestep_shift", _training_shift, _training_shift,
                 "FluxPipeline's shift at `data.resolution`: FLUX.1-dev 1.88 at 512 px, 3.16 at 1024 px; schnell 1.0",
                 f"{_KOHYA} (`--timestep_sampling flux_shift`; its `--discrete_flow_shift 3.1582` is the 1024 px value), "
                 "SimpleTuner `--flux_schedule_auto_shift`"),
    ProfileValue("task.guidance_scale", 1.0, None, "1.0 (dev; schnell has no guidance input)",
                 f"{_KOHYA} (`--guidance_scale 1.0`), SimpleTuner (`flux_guidance_value` default 1.0), diffusers "
                 "README_flux.md (`--guidance_scale=1`)"),
    ProfileValue("task.base_dtype", "bfloat16", "bfloat16", "bfloat16", f"all four: bf16 ({_AI_TOOLKIT} `dtype: bf16`)"),
    ProfileValue("task.gradient_checkpointing", True, True, "true",
                 f"{_AI_TOOLKIT}, SimpleTuner (\"in practically every situation\"), {_KOHYA}"),
    ProfileValue("trainer.accelerator", "auto", "auto", "auto (the GPU when there is one)",
                 "every FLUX.1 trainer trains on the GPU; Lightning's `auto` picks it (advtune's default is `cpu`)"),
    ProfileValue("trainer.max_steps", 2000, 2000, "2000", f"{_AI_TOOLKIT} (`steps: 2000`, \"500 - 4000 is a good range\")",
                 jobs=_LORA),
    ProfileValue("trainer.val_check_interval", 250, 250, "250", f"{_AI_TOOLKIT} (`sample_every: 250`)", jobs=_LORA),
    ProfileValue("checkpoint_every", 250, 250, "250", f"{_AI_TOOLKIT} (`save_every: 250`)", jobs=_LORA),
    ProfileValue("task.validation_num_steps", [4, 28], [1, 2, 4], "dev [4, 28]; schnell [1, 2, 4]",
                 "28: FluxPipeline's default `num_inference_steps`; 4: the few-step sampling the adversarial stage "
                 "aims at; schnell: diffusers' Flux docs (timestep-distilled, their example samples 4 steps)", jobs=_LORA),
    ProfileValue("task.teacher_steps", 28, None, "dev 28 (distillation's teacher)",
                 "FluxPipeline's default `num_inference_steps`, the steps FLUX.1-dev is sampled at", jobs=("distill",)),
    ProfileValue("task.validation_guidance_scale", 3.5, None, "dev 3.5 (training keeps 1.0)",
                 "FluxPipeline's default `guidance_scale` for FLUX.1-dev, and `advtune generate`'s"),
    ProfileValue("data.max_sequence_length", None, 256, "schnell 256 (dev keeps 512)",
                 "diffusers' Flux docs: for the timestep-distilled schnell, max_sequence_length cannot be more than 256"),
    ProfileValue("latent_adv_start_step", 500, 500, "500",
                 "advtune's FLUX.1 starting point (docs/quickstart/FLUX.md §5): a flow-matching-only first "
                 "quarter; not measured at FLUX.1 scale", jobs=_LORA),
    ProfileValue("disc_warmup_steps", 100, 100, "100", "advtune's FLUX.1 starting point, not measured", jobs=_LORA),
    ProfileValue("latent_adv_loss_weight", 0.1, 0.1, "0.1", "advtune's FLUX.1 starting point, not measured", jobs=_LORA),
)


def snapshot_profile(snapshot: str | Path | None) -> str | None:
    """``flux1-dev`` / ``flux1-schnell`` for a FLUX.1 snapshot (``FluxPipeline`` with or without
    ``guidance_embeds``), ``None`` for anything else (a missing file is reported later, by the task)."""
    if not snapshot:
        return None
    root = Path(str(snapshot)).expanduser()
    try:
        pipeline = json.loads((root / "model_index.json").read_text()).get("_class_name")
        transformer = json.loads((root / "transformer" / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if pipeline != "FluxPipeline":
        return None
    return "flux1-dev" if transformer.get("guidance_embeds") else "flux1-schnell"


def profile_values(name: str, snapshot: Path, resolution: int, job: str = "lora") -> list[tuple[ProfileValue, Any]]:
    """The profile's entries for ``job`` with their resolved values for this snapshot and resolution."""
    scheduler_file = Path(snapshot) / "scheduler" / "scheduler_config.json"
    scheduler = json.loads(scheduler_file.read_text()) if scheduler_file.is_file() else {}
    resolved = []
    for entry in (entry for entry in FLUX1_PROFILE if job in entry.jobs):
        value = entry.dev if name == "flux1-dev" else entry.schnell
        if callable(value):
            value = value(scheduler, resolution)
        if value is not None:
            resolved.append((entry, value))
    return resolved


def _set_on_command_line(key: str, overrides: Sequence[str], groups: Callable[[str], bool]) -> bool:
    for override in overrides:
        name = override.lstrip("+~").partition("=")[0]
        if groups(name):
            continue  # `data=image_folder` picks a group; it sets none of the group's values
        if key == name or key.startswith(name + "."):
            return True
    return False


def apply_profile(cfg: Any, overrides: Sequence[str], groups: Callable[[str], bool]) -> str | None:
    """Apply the profile ``cfg.profile`` asks for (inside ``open_dict``); return its name, ``None`` for none
    (so configs of runs from before profiles, which lack the key, still compare equal on resume).

    Args:
        cfg: the composed config (``profile``, ``pretrained``, ``task``... at the top).
        overrides: the command line's overrides: the keys they set keep the user's value.
        groups: whether a name is a config group (its overrides choose an option, not a value).
    """
    from omegaconf import OmegaConf

    from advtune.errors import ConfigError

    requested = str(cfg.get("profile") or "none")  # null: a composed config's "no profile"
    if requested not in ("auto", "none", *PROFILE_NAMES):
        raise ConfigError(f"profile={requested!r} is not valid: expected auto, none, {', '.join(PROFILE_NAMES)}")
    task = cfg.get("task") or {}
    job = _FLUX_TASKS.get(task.get("_target_")) if task.get("adapter_type") != "none" else None
    detected = snapshot_profile(cfg.get("pretrained")) if job else None
    if requested == "none" or detected is None:
        if requested in PROFILE_NAMES:
            raise ConfigError(f"profile={requested} needs pretrained=<a FLUX.1 snapshot> and a Flux adapter experiment")
        return None
    name = detected if requested == "auto" else requested
    resolution = OmegaConf.select(cfg, "data.resolution", default=None) or 512
    for entry, value in profile_values(name, Path(str(cfg.pretrained)).expanduser(), int(resolution), job):
        if OmegaConf.select(cfg, entry.key, default="<absent>", throw_on_missing=False) == "<absent>":
            continue  # this experiment or data module has no such key
        if _set_on_command_line(entry.key, overrides, groups) or (entry.lora_only and task.get("adapter_type") != "lora"):
            continue
        OmegaConf.update(cfg, entry.key, value, merge=False, force_add=False)
    return name
