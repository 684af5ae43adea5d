"""Where a run starts: an empty ``output_dir``, or the newest checkpoint of one that holds a run.

Re-running a command into the same ``output_dir`` continues the run there (``resume=auto``) or
refuses (``resume=never``); it never starts a second run beside the first. A checkpoint is checked
before anything is built: it must load without unpickling code, be advtune's, and come from the
same config, except for the keys a resumed run may change (``advtune.config.RESUMABLE_CHANGES``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from advtune.config import ConfigError, config_differences
from advtune.training.checkpoint_io import CheckpointError, load_checkpoint_file, newest_checkpoint

__all__ = ["ResumePoint", "prepare_output_dir", "check_output_dir", "find_resume_point", "RESUME_CHOICES"]

RESUME_CHOICES = ("auto", "never")
_SHOWN_CHANGES = 4


@dataclass
class ResumePoint:
    """A checkpoint to continue from, already loaded (``weights_only``) and checked."""

    path: Path
    checkpoint: dict[str, Any]

    @property
    def step(self) -> int:
        """Generator updates done."""
        return int(self.checkpoint.get("global_step", 0))


def prepare_output_dir(out: Path) -> None:
    """Create ``out`` and prove it takes a file; one :class:`ConfigError` line otherwise."""
    probe = out / f".advtune-write-test-{socket.gethostname()}-{os.getpid()}"  # one per process: ranks run this too
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"output_dir {out} is not writable: {error.strerror or error}") from None


def check_output_dir(out: Path) -> None:
    """What :func:`prepare_output_dir` proves by writing, checked without writing (``validate-config``)."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"output_dir {out} is not writable: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output_dir {out} is not writable: no permission to write into {existing}")


def find_resume_point(cfg: DictConfig, out: Path) -> ResumePoint | None:
    """The checkpoint this run continues from, or ``None`` for a new run.

    ``ckpt_path=last``: the newest checkpoint of ``out``; ``ckpt_path=FILE``: that file (into an
    ``out`` holding no other run); no ``ckpt_path``: the newest checkpoint of ``out`` when
    ``resume=auto``, an error when ``resume=never`` and ``out`` holds one.
    """
    resume = cfg.get("resume") or "auto"
    if resume not in RESUME_CHOICES:
        raise ConfigError(f"resume={resume!r} is not valid: expected one of {', '.join(RESUME_CHOICES)}")
    folder = out / "checkpoints"
    existing = newest_checkpoint(folder)
    requested = cfg.get("ckpt_path")
    if requested == "last":
        if existing is None:
            raise ConfigError(f"ckpt_path=last: output_dir {out} holds no checkpoint (checkpoints/*.ckpt)")
        path = existing
    elif requested is not None:
        path = Path(str(requested))
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        if existing is not None and path.resolve().parent != folder.resolve():
            raise ConfigError(f"output_dir {out} already holds another run; to continue from {path}, "
                              "give an empty output_dir")
    elif existing is not None:
        if resume == "never":
            raise ConfigError(f"output_dir {out} already holds a run ({folder / existing.name}); resume=never leaves "
                              "it untouched: pick another output_dir, or resume=auto to continue it")
        path = existing
    else:
        return None
    checkpoint = load_checkpoint_file(path)
    state = checkpoint.get("advtune")
    if not isinstance(state, dict) or not state.get("config"):
        raise CheckpointError(f"{path} is not an advtune training checkpoint (no 'advtune' state); cannot resume from it")
    changed = config_differences(OmegaConf.create(state["config"]), cfg)
    if changed:
        shown = "; ".join(changed[:_SHOWN_CHANGES])
        more = f"; and {len(changed) - _SHOWN_CHANGES} more" if len(changed) > _SHOWN_CHANGES else ""
        raise ConfigError(f"{path} was trained with a different config ({shown}{more}); a resumed run may only "
                          "change trainer.max_steps and logging keys: use a new output_dir for a new run")
    return ResumePoint(path, checkpoint)
