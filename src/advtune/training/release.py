"""What a run ships, written so that a crash never leaves a half-written file behind.

``write_release`` exports the generator side (``task.export``: the generator, or the adapter as
``pytorch_lora_weights.safetensors``) and the discriminator (``discriminator.safetensors`` with the
``discriminator.yaml`` that rebuilds it) into a hidden staging folder, then renames each file into
place (atomic on POSIX). It runs inside ``module.generator_weights()``: with a generator EMA, the
averaged weights ship.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from advtune.training.checkpoint_io import CheckpointError, describe_write_error, is_write_failure

__all__ = ["write_release", "remove_stale_staging"]

_STAGING_PREFIX = ".export-"


def write_release(module: Any, directory: str | Path, discriminator_yaml: str | None) -> list[Path]:
    """Write what ships of ``module`` into ``directory``; return the files written.

    Args:
        module: an :class:`~advtune.training.AdversarialModule` (its task and discriminator).
        directory: destination folder (created); files of the same names are replaced.
        discriminator_yaml: the discriminator's config (``None``: the YAML is not written).

    Raises:
        CheckpointError: a file cannot be written (disk full, no permission), in one line.
    """
    directory = Path(directory)
    try:
        return _write(module, directory, discriminator_yaml)
    except Exception as error:
        if not is_write_failure(error):
            raise
        reason = describe_write_error(error, directory / "export")
        raise CheckpointError(f"cannot write the export into {directory}: {reason}") from None


def _write(module: Any, directory: Path, discriminator_yaml: str | None) -> list[Path]:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=_STAGING_PREFIX, suffix=".tmp"))
    try:
        with module.generator_weights():
            module.task.export(staging)
        if module.discriminator is not None:
            state = {k: v.detach().contiguous().cpu() for k, v in module.discriminator.state_dict().items()}
            save_file(state, str(staging / "discriminator.safetensors"))
            if discriminator_yaml:
                (staging / "discriminator.yaml").write_text(discriminator_yaml)
        written = []
        for entry in sorted(staging.iterdir()):
            target = directory / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
            written.append(target)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_stale_staging(output_dir: str | Path, export_subdir: str) -> None:
    """Delete staging folders a killed process left in ``output_dir`` and its periodic exports."""
    root = Path(output_dir)
    for pattern in (f"{_STAGING_PREFIX}*.tmp", f"{export_subdir}/*/{_STAGING_PREFIX}*.tmp"):
        for path in root.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)
