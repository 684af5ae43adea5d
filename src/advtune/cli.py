"""``advtune`` command line: ``train | validate-config | sample | export | generate | evaluate | stylize``.

Overrides are Hydra's: ``advtune train experiment=digits_gan trainer.max_steps=500 output_dir=runs/a``.
Heavy libraries are imported inside the commands, so ``advtune --help`` and ``advtune COMMAND
--help`` answer at once. Mistakes in the input are one ``error: ...`` line on stderr (exit code 2),
never a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from advtune.commands import COMMANDS, EXTERNAL_COMMANDS, command_help

__all__ = ["main"]

CONFIG_DIR = Path(__file__).parent / "configs"
HELP_FLAGS = ("-h", "--help", "help")


def config_choices() -> dict[str, list[str]]:
    """Options of each config group, read from the shipped config folder."""
    return {group.name: sorted(p.stem for p in group.glob("*.yaml"))
            for group in sorted(CONFIG_DIR.iterdir()) if group.is_dir()}


def usage() -> str:
    lines = ["usage: advtune COMMAND [key=value ...]    (advtune COMMAND --help for its arguments)", "", "commands:"]
    lines += [f"  {name:<16} {text}" for name, text in COMMANDS.items()]
    lines += ["", "config groups (pick one with group=name):"]
    lines += [f"  {group:<14} {', '.join(names)}" for group, names in config_choices().items()]
    lines += ["", "examples:", "  advtune train experiment=digits_gan trainer.max_steps=500 output_dir=runs/gan",
              "  advtune train experiment=digits_gan trainer.max_steps=1000 output_dir=runs/gan   # continues it",
              "  advtune sample ckpt_path=runs/gan/checkpoints/last.ckpt num_samples=64",
              "  advtune validate-config experiment=audio_vae discriminator=lightweight adversarial=staged",
              "  advtune stylize ckpt_path=outputs/style_transfer content=photos/ style=texture.png",
              "", "docs: README.md, docs/OPTIONS.md, docs/MULTINODE.md, docs/STYLE.md"]
    return "\n".join(lines)


def _error(message: object) -> int:
    text = " ".join(str(message).split())  # one line, whatever the message held
    print(f"error: {text}", file=sys.stderr)
    return 2


def _external(command: str) -> object | None:
    """The module of ``generate``/``evaluate``, imported now; ``None`` when not installed."""
    name = EXTERNAL_COMMANDS[command]
    try:
        found = importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        found = False
    return importlib.import_module(name) if found else None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in HELP_FLAGS:
        print(usage())
        return 0
    command, overrides = argv[0], argv[1:]
    if command not in COMMANDS:
        return _error(f"unknown command {command!r}; valid: {', '.join(COMMANDS)}")
    wants_help = any(arg in HELP_FLAGS for arg in overrides)
    if command in EXTERNAL_COMMANDS:
        module = _external(command)
        if module is None:
            return _error(f"`advtune {command}` is not available in this installation "
                          f"(module {EXTERNAL_COMMANDS[command]} not found)")
        if wants_help:
            print(module.HELP)
            return 0
    elif wants_help:
        print(command_help(command, config_choices()))
        return 0

    from advtune.console import quiet_dependencies

    quiet_dependencies()  # before the dependencies print anything
    from advtune.runner import USER_ERRORS, run_command  # heavy imports start here

    try:
        if command in EXTERNAL_COMMANDS:
            module.main(overrides)
        else:
            run_command(command, overrides)
    except USER_ERRORS as err:
        return _error(err)
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is intact; re-run the same command to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
