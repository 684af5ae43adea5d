"""``advtune`` command line: ``train | validate-config | sample | export`` (Hydra compose + instantiate).

Overrides are Hydra's: ``advtune train experiment=digits_gan trainer.max_steps=500 output_dir=runs/a``.
Heavy libraries are imported inside the commands, so ``advtune --help`` answers at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["main"]

CONFIG_DIR = Path(__file__).parent / "configs"
COMMANDS = {
    "train": "train a model (``ckpt_path=...`` resumes exactly)",
    "validate-config": "compose, check and build every object of a config without training",
    "sample": "write a sample grid (PNG) and raw samples (.npy) from ``ckpt_path=...``",
    "export": "write what ships (generator or adapter) and the discriminator from ``ckpt_path=...``",
}


def config_choices() -> dict[str, list[str]]:
    """Options of each config group, read from the shipped config folder."""
    return {group.name: sorted(p.stem for p in group.glob("*.yaml"))
            for group in sorted(CONFIG_DIR.iterdir()) if group.is_dir()}


def usage() -> str:
    lines = ["usage: advtune COMMAND [key=value ...]", "", "commands:"]
    lines += [f"  {name:<16} {text.replace('``', '')}" for name, text in COMMANDS.items()]
    lines += ["", "config groups (pick one with group=name):"]
    lines += [f"  {group:<14} {', '.join(names)}" for group, names in config_choices().items()]
    lines += ["", "examples:", "  advtune train experiment=digits_gan trainer.max_steps=500 output_dir=runs/gan",
              "  advtune train experiment=digits_gan ckpt_path=runs/gan/checkpoints/last.ckpt",
              "  advtune sample ckpt_path=runs/gan/checkpoints/last.ckpt num_samples=64",
              "  advtune validate-config experiment=audio_vae discriminator=lightweight adversarial=staged",
              "", "docs: README.md, docs/OPTIONS.md"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, overrides = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; valid: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from advtune.runner import USER_ERRORS, run_command  # heavy imports start here

    try:
        run_command(command, overrides)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
