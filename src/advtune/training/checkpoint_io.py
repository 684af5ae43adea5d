"""Checkpoint I/O that never loses the last good checkpoint and never unpickles code.

- Saving writes to a temporary file in the same folder, syncs it to disk, then renames it over
  the target (atomic on POSIX): a crash mid-write leaves the previous file intact, and a failed
  write (disk full, file too large) is one :class:`CheckpointError` line. Temporary files a killed
  process left behind are removed by :func:`remove_stale_temporaries` when the run starts again.
- A checkpoint whose weights hold NaN or Inf is not written (a warning says so): the last good
  one stays.
- Loading uses ``torch.load(weights_only=True)``: a file carrying pickled code is refused with a
  one-line error instead of running it.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["SafeCheckpointIO", "nonfinite_tensors", "CheckpointError", "load_checkpoint_file", "newest_checkpoint",
           "remove_stale_temporaries", "prune_periodic_checkpoints", "describe_write_error", "is_write_failure"]

# Test hook of the crash-safety test: seconds to wait between writing the temporary file and the
# rename, so a SIGKILL can land inside a checkpoint write for certain. Unset in normal use.
_PAUSE_ENV = "ADVTUNE_TEST_PAUSE_IN_SAVE"
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}



def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; a checkpoint gets the mode any other file of the run gets (0644 under umask 022).
_FILE_MODE = 0o666 & ~_umask()


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, or not loadable without unpickling code; or a checkpoint
    or export cannot be written (disk full, no permission)."""


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


# What torch's zip writer and safetensors say when the file system refuses a write (they do not
# always keep the OSError as the exception's cause).
_WRITE_FAILURE = re.compile(r"os error \d+|I/O error|inline_container\.cc|file write failed", re.IGNORECASE)


def _os_error_in(error: BaseException) -> OSError | None:
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    return cause


def is_write_failure(error: BaseException) -> bool:
    """Whether ``error`` says the file system refused a write (disk full, size limit, permission)."""
    return _os_error_in(error) is not None or bool(_WRITE_FAILURE.search(str(error)))


def describe_write_error(error: BaseException, path: Path) -> str:
    """One line saying why writing ``path`` failed (torch wraps the OS error in a RuntimeError)."""
    cause = _os_error_in(error)
    if isinstance(cause, OSError) and cause.errno in _DISK_FULL:
        free = ""
        try:
            import shutil

            free = f", {shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free"
        except OSError:
            pass
        return f"the disk is full ({os.strerror(cause.errno)}{free})"
    if isinstance(cause, OSError):
        return os.strerror(cause.errno) if cause.errno else str(cause)
    if "inline_container" in str(error):  # torch lost the OS error on the way
        return "the file system refused the write (disk full, or a file size limit)"
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class SafeCheckpointIO(TorchCheckpointIO):
    """Atomic, finite-only saving and ``weights_only`` loading of Lightning checkpoints.

    ``preload(path, checkpoint)`` hands over a checkpoint the caller already loaded (to check it
    before training), so Lightning's resume does not read the file a second time.
    """

    def __init__(self) -> None:
        super().__init__()
        self._preloaded: tuple[Path, dict[str, Any]] | None = None

    def preload(self, path: str | Path, checkpoint: dict[str, Any]) -> None:
        self._preloaded = (Path(path).resolve(), checkpoint)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        bad = nonfinite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            warnings.warn(f"not writing {path}: non-finite weights in {', '.join(bad[:3])}; the last good checkpoint is kept",
                          stacklevel=2)
            return
        path = Path(path)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            if hasattr(os, "fchmod"):
                os.fchmod(fd, _FILE_MODE)
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())  # on disk before it replaces the last good file
            if os.environ.get(_PAUSE_ENV):
                time.sleep(float(os.environ[_PAUSE_ENV]))
            os.replace(tmp, path)
        except BaseException as error:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            if not isinstance(error, Exception):  # Ctrl-C: stop as asked
                raise
            raise CheckpointError(f"cannot write checkpoint {path}: {describe_write_error(error, path)}; "
                                  "the last good checkpoint is intact") from None

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if self._preloaded is not None and self._preloaded[0] == Path(path).resolve():
            checkpoint, self._preloaded = self._preloaded[1], None
            return checkpoint
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


def newest_checkpoint(directory: str | Path) -> Path | None:
    """The most recently written ``*.ckpt`` of ``directory`` (``last.ckpt`` on ties), or ``None``.

    ``last.ckpt`` is rewritten with every periodic checkpoint, so it is usually the newest; a
    process killed between the two writes leaves the periodic one newer, and that one is picked.
    """
    files = list(Path(directory).glob("*.ckpt")) if Path(directory).is_dir() else []
    if not files:
        return None
    return max(files, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"))


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes a killed process never finished."""
    stale = list(Path(directory).glob(".*.ckpt.*.tmp")) if Path(directory).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def prune_periodic_checkpoints(directory: str | Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest ``stepNNNNNN.ckpt`` (``keep < 0``: keep all).

    Lightning's ModelCheckpoint keeps the newest k of the files it saved itself; a process killed
    between writing one and deleting an older one leaves a file no later run knows about.
    """
    periodic = [p for p in Path(directory).glob("step*.ckpt") if p.stem[4:].isdigit()] if Path(directory).is_dir() else []
    periodic.sort(key=lambda p: int(p.stem[4:]))
    stale = periodic[: max(0, len(periodic) - keep)] if keep >= 0 else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
