"""The commands of ``advtune``: what each does, its arguments, its ``--help`` text.

Kept free of heavy imports: ``advtune --help`` and ``advtune COMMAND --help`` answer at once.
``generate`` and ``evaluate`` live in their own modules (``advtune.generate``, ``advtune.evaluate``,
each with ``main(overrides)`` and a ``HELP`` text) and are imported only when run.
"""

from __future__ import annotations

from typing import Any, Collection, Iterator

from advtune.config import ConfigError

__all__ = ["COMMANDS", "SIMPLE_ARGS", "EXTERNAL_COMMANDS", "command_help", "parse_simple_args", "key_values"]

COMMANDS = {
    "train": "train a model; re-running into the same output_dir resumes it (resume=auto)",
    "validate-config": "prepare a run as train does (objects, optimizers, data, Trainer); no step, no files",
    "sample": "write a sample grid (PNG, first 64) and all raw samples (.npy) from ckpt_path=...",
    "export": "write what ships (generator or adapter) and the discriminator from ckpt_path=...",
    "generate": "generate images with a base model and an exported adapter (advtune generate --help)",
    "evaluate": "score a trained model against held-out data; a Flux run or LoRA: student vs teacher (--help)",
    "stylize": "apply a trained style-transfer model to your own images (advtune stylize --help)",
}
EXTERNAL_COMMANDS = {"generate": "advtune.generate", "evaluate": "advtune.evaluate", "stylize": "advtune.stylize"}

# name -> (default, meaning) of the key=value arguments of the commands that read a checkpoint.
_ALLOW = ("", "extra _target_ module prefixes, comma-separated (a checkpoint cannot widen its own list)")
SIMPLE_ARGS: dict[str, dict[str, tuple[Any, str]]] = {
    "sample": {
        "ckpt_path": (None, "checkpoint written by advtune train (required)"),
        "num_samples": (64, "samples drawn; all go to samples.npy, the first 64 to samples.png"),
        "seed": (0, "seed of the noise"),
        "out_dir": ("samples", "folder for samples.npy and samples.png"),
        "allowed_target_prefixes": _ALLOW,
    },
    "export": {
        "ckpt_path": (None, "checkpoint written by advtune train (required)"),
        "out_dir": ("export", "folder for the generator/adapter file and discriminator.safetensors + .yaml"),
        "allowed_target_prefixes": _ALLOW,
    },
}

_TRAIN_KEYS = (
    ("experiment=NAME", "a ready-made job (see the list of config groups below)"),
    ("output_dir=DIR", "everything the run writes (default outputs/<experiment>)"),
    ("trainer.max_steps=N", "generator updates to train for (a resumed run may raise it)"),
    ("resume=auto|never", "auto: continue the run found in output_dir; never: refuse to touch it"),
    ("ckpt_path=last|FILE", "continue from the newest checkpoint of output_dir, or from FILE"),
    ("checkpoint_every=N", "checkpoint and export what ships every N generator updates"),
    ("trainer.devices=N", "N devices; N > 1 uses DDP (multi-node: docs/MULTINODE.md)"),
    ("data.skip_bad_files=true", "skip unreadable data files (default: stop and name them)"),
)

EXAMPLES = {
    "train": ["advtune train experiment=digits_gan trainer.max_steps=500 output_dir=runs/gan",
              "advtune train experiment=digits_gan trainer.max_steps=1000 output_dir=runs/gan   # continues it"],
    "validate-config": ["advtune validate-config experiment=audio_vae discriminator=lightweight adversarial=staged"],
    "sample": ["advtune sample ckpt_path=runs/gan/checkpoints/last.ckpt num_samples=1000 out_dir=runs/gan/s"],
    "export": ["advtune export ckpt_path=runs/gan/checkpoints/last.ckpt out_dir=release"],
}


def _usage_of_args(command: str) -> list[str]:
    lines = [f"usage: advtune {command} ckpt_path=FILE [key=value ...]", "", COMMANDS[command], "", "arguments:"]
    for name, (default, meaning) in SIMPLE_ARGS[command].items():
        shown = "" if default in (None, "") else f" (default {default})"
        lines.append(f"  {name + '=':<26} {meaning}{shown}")
    return lines


def command_help(command: str, groups: dict[str, list[str]]) -> str:
    """``advtune COMMAND --help`` for the built-in commands (``groups``: config group -> options)."""
    if command in SIMPLE_ARGS:
        lines = _usage_of_args(command)
    else:
        lines = [f"usage: advtune {command} [group=option ...] [key=value ...]", "", COMMANDS[command], "",
                 "main keys (every option: docs/OPTIONS.md):"]
        lines += [f"  {key:<26} {meaning}" for key, meaning in _TRAIN_KEYS]
        lines += ["", "config groups (pick one with group=name):"]
        lines += [f"  {group:<14} {', '.join(names)}" for group, names in groups.items()]
    lines += ["", "examples:"] + [f"  {example}" for example in EXAMPLES[command]]
    return "\n".join(lines)


def key_values(overrides: list[str], valid: Collection[str], prefix: str = "", suffix: str = "") -> Iterator[tuple[str, str]]:
    """``(key, value)`` of each ``key=value`` string; one that is not, or names no key of ``valid``, raises
    :class:`ConfigError`: ``"<prefix>unknown argument 'x'<suffix>; valid: a=, b="``."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in valid:
            raise ConfigError(f"{prefix}unknown argument {item!r}{suffix}; valid: {', '.join(k + '=' for k in valid)}")
        yield key, value


def parse_simple_args(command: str, overrides: list[str]) -> dict[str, Any]:
    """``key=value`` arguments of ``sample``/``export``, typed like their defaults."""
    spec = SIMPLE_ARGS[command]
    args = {name: default for name, (default, _) in spec.items()}
    for key, value in key_values(overrides, spec, suffix=f" (advtune {command} --help)"):
        default = spec[key][0]
        try:
            args[key] = type(default)(value) if default is not None else value
        except ValueError:
            raise ConfigError(f"{key}={value!r} is not valid: expected {type(default).__name__}") from None
    if args.get("ckpt_path") is None:
        raise ConfigError(f"ckpt_path=... is required (advtune {command} --help)")
    if "num_samples" in args and args["num_samples"] < 1:
        raise ConfigError(f"num_samples={args['num_samples']} is not valid: expected an integer >= 1")
    if "seed" in args and not 0 <= args["seed"] < 2**32:  # the range of the run's own seed
        raise ConfigError(f"seed={args['seed']} is not valid: expected an integer from 0 to {2**32 - 1}")
    if not str(args["out_dir"]).strip():
        raise ConfigError("out_dir='' is not valid: expected a folder path")
    return args
