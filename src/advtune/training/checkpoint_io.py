"""Checkpoint I/O that never loses the last good checkpoint and never unpickles code.

- Saving writes to a temporary file in the same folder, then renames it over the target
  (atomic on POSIX): a crash mid-write leaves the previous file intact.
- A checkpoint whose weights hold NaN or Inf is not written (a warning says so): the last good
  one stays.
- Loading uses ``torch.load(weights_only=True)``: a file carrying pickled code is refused with a
  one-line error instead of running it.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["SafeCheckpointIO", "nonfinite_tensors", "CheckpointError"]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, or not loadable without unpickling code."""


def nonfinite_tensors(obj: Any, prefix: str = "") -> list[str]:
    """Names of floating-point tensors in a nested dict/list that contain NaN or Inf."""
    found: list[str] = []
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
            found.append(prefix or "<tensor>")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            found += nonfinite_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            found += nonfinite_tensors(value, f"{prefix}[{i}]")
    return found


class SafeCheckpointIO(TorchCheckpointIO):
    """Atomic, finite-only saving and ``weights_only`` loading of Lightning checkpoints."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        bad = nonfinite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            warnings.warn(f"not writing {path}: non-finite weights in {', '.join(bad[:3])}; the last good checkpoint is kept",
                          stacklevel=2)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location)

    def remove_checkpoint(self, path: str | Path) -> None:
        fs = get_filesystem(path)
        if fs.exists(path):
            fs.rm(path, recursive=True)


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load an advtune/Lightning checkpoint safely; raise :class:`CheckpointError` with one line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means the file is not a safe checkpoint
        reason = "it holds pickled objects (refused: code could run)" if "Weights only load failed" in str(err) else type(err).__name__
        raise CheckpointError(f"cannot load checkpoint {path}: corrupt, or not loadable without unpickling code; {reason}") from None
