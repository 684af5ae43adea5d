"""``advtune evaluate`` on a Flux run or LoRA file: the student beside its teacher, from the same noise.

The teacher is the run's (a distillation run: the base with the adapters off, or base + teacher LoRA)
at ``teacher_steps``; for any other Flux run it is the model itself at ``teacher_steps`` (the
many-step reference). Every column starts from the same noise (``seed``) and the same prompts.

* Digits (1-channel latents, identity codec): :func:`advtune.metrics.evaluate_digits` of each column
  (FD, KID, precision, recall in the independent classifier's features, against all real images of
  the run's digits) and the per-image RMS distance of each student column to the teacher's images.
* A snapshot: per prompt, ``num_samples`` images per column, decoded; the per-image RMS distance
  of each student column to the teacher (pixels in [-1, 1]).

Writes ``flux_evaluation.json``, ``flux_evaluation.md`` (the table, also printed) and
``teacher_vs_student.png`` (columns: teacher, then the student at each step count) to ``out_dir``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from advtune.commands import key_values
from advtune.config import ConfigError

__all__ = ["HELP", "main", "evaluate_flux", "load_lora_student"]

HELP = """usage: advtune evaluate ckpt_path=RUN.ckpt [steps=1,2,4] [teacher_steps=N] [num_samples=N] [key=value ...]
       advtune evaluate lora=FILE (pretrained=SNAPSHOT | base=DIR) [teacher_lora=FILE] [key=value ...]

Flux runs and LoRA files: the student at each step count beside its teacher, from the same noise;
writes flux_evaluation.json, flux_evaluation.md (the table, also printed) and teacher_vs_student.png.

  ckpt_path      a Flux run's checkpoint (a distillation run: its teacher; else the model at teacher_steps)
  lora           a student LoRA file instead (its metadata names the teacher: the base or teacher_lora=)
  pretrained     FLUX.1 snapshot root of the LoRA's base; base=DIR: a saved transformer (the digits demo's)
  teacher_lora   the LoRA the student was distilled from (default: the base is the teacher)
  steps=1,2,4    student step counts; teacher_steps (default: the run's, 32 for a LoRA file; its metadata)
  num_samples    digits: images per column (>= 1000 for the digits yardstick; default 1000);
                 a snapshot: images per prompt (default 2)
  prompts        a snapshot: prompts, comma-separated (default: the run's validation_prompts)
  digits         digits: the classes to score against (default: the run's), e.g. 5,6,7,8,9
  guidance_scale the inference guidance (default: the run's, or the LoRA's metadata, or 3.5)
  resolution     lora= on a snapshot: pixel side of the images (default 512)
  max_sequence_length  a snapshot: T5 tokens of the prompts (default: the run's, else 512)
  seed=20251     the noise every column starts from
  out_dir=evaluation, allowed_target_prefixes=a.,b."""

_ARGS = {"ckpt_path": "", "lora": "", "pretrained": "", "base": "", "teacher_lora": "", "steps": "1,2,4",
         "teacher_steps": "", "num_samples": "", "prompts": "", "digits": "", "guidance_scale": "", "seed": "20251",
         "max_sequence_length": "", "resolution": "",
         "out_dir": "evaluation", "allowed_target_prefixes": ""}


def parse(overrides: list[str]) -> dict[str, str]:
    """``key=value`` strings → the arguments; a bad one raises :class:`ConfigError` (one line)."""
    args = dict(_ARGS)
    for key, value in key_values(overrides, _ARGS, "evaluate: ", " for a Flux run"):
        args[key] = value
    if bool(args["ckpt_path"]) == bool(args["lora"]):
        raise ConfigError("evaluate: give ckpt_path=RUN.ckpt or lora=FILE (with pretrained= or base=)")
    if args["lora"] and bool(args["pretrained"]) == bool(args["base"]):
        raise ConfigError("evaluate: lora=FILE needs its base: pretrained=SNAPSHOT or base=DIR (one of them)")
    for key in ("steps", "teacher_steps", "num_samples", "seed", "digits", "max_sequence_length", "resolution"):
        values = [v for v in args[key].split(",") if v]
        if not all(v.strip().isdigit() for v in values) or (key not in ("seed", "digits")
                                                             and any(int(v) < 1 for v in values)):
            raise ConfigError(f"evaluate: {key} must be {'integers' if key in ('steps', 'digits') else 'an integer'}"
                              f" >= {0 if key in ('seed', 'digits') else 1}, got {args[key]!r}")
    if args["guidance_scale"]:
        try:
            float(args["guidance_scale"])
        except ValueError:
            raise ConfigError(f"evaluate: guidance_scale must be a number, got {args['guidance_scale']!r}") from None
    return args


def load_lora_student(args: dict[str, str]) -> Any:
    """A :class:`~advtune.tasks.flux_distill.FluxDistillTask` whose student adapter holds the LoRA file."""
    from diffusers.loaders.lora_pipeline import FluxLoraLoaderMixin
    from peft.utils import set_peft_model_state_dict

    from advtune.tasks.flux_distill import FluxDistillTask

    lora = Path(args["lora"]).expanduser()
    if not lora.is_file():
        raise ConfigError(f"evaluate: LoRA file not found: {lora}")
    state, metadata = FluxLoraLoaderMixin.lora_state_dict(str(lora), return_lora_metadata=True)
    config = {k.removeprefix("transformer."): v for k, v in (metadata or {}).items()}
    header = _header(lora)
    base = {"snapshot": args["pretrained"]} if args["pretrained"] else {"pretrained_path": args["base"]}
    task = FluxDistillTask(**base, teacher_lora=args["teacher_lora"] or None,
                           rank=int(config.get("r", 4)), alpha=float(config.get("lora_alpha", config.get("r", 4))),
                           target_modules=config.get("target_modules"), digits_metric=False,
                           validation_resolution=int(args["resolution"]) if args["resolution"] else None,
                           teacher_steps=int(args["teacher_steps"] or header.get("advtune_teacher_steps", 32)),
                           guidance_scale=float(args["guidance_scale"] or header.get(
                               "advtune_recommended_guidance_scale", 3.5)))
    state = {k.removeprefix("transformer."): v for k, v in state.items() if k.startswith("transformer.")}
    result = set_peft_model_state_dict(task.transformer, state, adapter_name="default")
    if getattr(result, "unexpected_keys", None):
        raise ConfigError(f"evaluate: {lora} does not fit the base: unexpected {result.unexpected_keys[0]}")
    return task.eval()


def _header(lora: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(lora), "pt") as handle:
        return dict(handle.metadata() or {})


@torch.no_grad()
def evaluate_flux(task: Any, steps: list[int], teacher_steps: int, num_samples: int, seed: int,
                  digits: list[int] | None, prompts: list[str], out_dir: Path) -> dict[str, Any]:
    """Render teacher and student columns from the same noise; score them (see the module docstring)."""
    from advtune.tasks.flux_validation import render_prompt_grid
    from advtune.visualize import save_side_by_side

    if hasattr(task, "teacher_sample"):  # a distillation run's own teacher
        task.teacher_steps = teacher_steps
        teacher = lambda num, g, i=0: task.teacher_sample(num, g, prompt_index=i)  # noqa: E731
    else:  # the model itself, at many steps
        teacher = lambda num, g, i=0: task.sample(num, g, teacher_steps, prompt_index=i)  # noqa: E731
    columns = {f"teacher, {teacher_steps} steps": teacher}
    columns.update({f"student, {n} step{'s' if n > 1 else ''}": (lambda num, g, i=0, n=n: task.sample(num, g, n, i))
                    for n in steps})
    results: dict[str, Any] = {"columns": list(columns), "rows": {}}
    if prompts:
        images = {label: [sample(num_samples, torch.Generator().manual_seed(seed + i), i) for i in range(len(prompts))]
                  for label, sample in columns.items()}
        teacher = torch.cat(next(iter(images.values())))
        for label, per_prompt in images.items():
            results["rows"][label] = {"rms_to_teacher": _rms(torch.cat(per_prompt), teacher)}
        render_prompt_grid({k: (lambda n, g, i, k=k: images[k][i][:1]) for k in columns}, prompts, seed,
                           out_dir / "teacher_vs_student.png")
        return results
    from advtune.metrics import evaluate_digits

    images = {label: sample(num_samples, torch.Generator().manual_seed(seed)) for label, sample in columns.items()}
    teacher = next(iter(images.values()))
    for label, batch in images.items():
        scores = evaluate_digits(batch, digits=digits, min_samples=min(1000, num_samples))
        results["rows"][label] = {**{k.split("/")[1]: v for k, v in scores.items() if k.startswith("independent/")},
                                  "rms_to_teacher": _rms(batch, teacher)}
    save_side_by_side({label: batch[:64] for label, batch in images.items()}, out_dir / "teacher_vs_student.png")
    return results


def _rms(images: torch.Tensor, teacher: torch.Tensor) -> float:
    """Mean over images of the per-image root-mean-square difference (images in [-1, 1])."""
    return float(((images.float() - teacher.float()) ** 2).flatten(1).mean(1).sqrt().mean())


def markdown(results: dict[str, Any], source: str) -> str:
    """The table of :func:`evaluate_flux`'s results."""
    names = list(next(iter(results["rows"].values())))
    lines = [f"{source}\n", "| column | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, row in results["rows"].items():
        lines.append(f"| {label} | " + " | ".join(f"{row[n]:.4g}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def main(overrides: list[str]) -> None:
    """``advtune evaluate`` for Flux (see :data:`HELP`)."""
    import contextlib

    from omegaconf import OmegaConf

    from advtune.tasks.flux_adapter import FluxAdapterTask

    args = parse(overrides)
    run_digits, run_prompts, max_length, weights = None, [], 512, contextlib.nullcontext()
    if args["ckpt_path"]:
        from advtune.runner import load_run

        module, cfg = load_run(args["ckpt_path"], tuple(p for p in args["allowed_target_prefixes"].split(",") if p))
        task, source, snapshot, weights = module.task, args["ckpt_path"], cfg.get("pretrained"), module.generator_weights()
        data = OmegaConf.to_container(cfg.data, resolve=True)
        data = data.get("source", data)
        run_digits, run_prompts = data.get("digits"), list(cfg.get("validation_prompts") or [])
        max_length = int(data.get("max_sequence_length") or max_length)
    else:
        task, source, snapshot = load_lora_student(args), args["lora"], args["pretrained"] or None
    if not isinstance(task, FluxAdapterTask):
        raise ConfigError(f"evaluate: {source} holds a {type(task).__name__}, not a Flux run")
    teacher_steps = int(args["teacher_steps"] or getattr(task, "teacher_steps", 32))
    if args["guidance_scale"]:
        task.validation_guidance_scale = float(args["guidance_scale"])
    prompts: list[str] = []
    if snapshot is None and task.latent_shape[0] == 1:  # the digits toy
        digits = [int(d) for d in args["digits"].split(",") if d] or run_digits
        num_samples = int(args["num_samples"] or 1000)
    else:
        from advtune.data.text_embeddings import iter_prompt_embeddings

        prompts = [p.strip() for p in args["prompts"].split(",") if p.strip()] or run_prompts
        if not prompts:
            raise ConfigError("evaluate: give prompts=... (comma-separated) to render")
        device = next(task.parameters()).device
        chunks = list(iter_prompt_embeddings(Path(snapshot), prompts, int(args["max_sequence_length"] or max_length),
                                             str(device), torch.float32))
        task._prompts = (prompts, torch.cat([c[1] for c in chunks]), torch.cat([c[2] for c in chunks]))
        digits, num_samples = None, int(args["num_samples"] or 2)
    out_dir = Path(args["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = [int(n) for n in args["steps"].split(",") if n]
    with weights:
        results = evaluate_flux(task, steps, teacher_steps, num_samples, int(args["seed"]), digits, prompts, out_dir)
    results.update(source=str(source), num_samples=num_samples, digits=digits, prompts=prompts, seed=int(args["seed"]))
    (out_dir / "flux_evaluation.json").write_text(json.dumps(results, indent=2))
    what = f"digits {digits}" if not prompts else f"{len(prompts)} prompt(s)"
    table = markdown(results, f"{source}: {num_samples} samples per {'column' if not prompts else 'prompt'}, {what}, "
                              f"noise seed {args['seed']}")
    (out_dir / "flux_evaluation.md").write_text(table)
    print(table + f"\nwrote {out_dir / 'flux_evaluation.json'}, {out_dir / 'flux_evaluation.md'}, "
                  f"{out_dir / 'teacher_vs_student.png'}")
