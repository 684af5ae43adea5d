"""Find unreadable data files before the first training step, not in the middle of an epoch.

A data module lists its files, then calls :func:`scan_files` with a reader that opens one file the
way training will. Bad files are either named in one error line (the default), or, with
``data.skip_bad_files=true``, left out with one warning line that counts and names them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from advtune.config import ConfigError

__all__ = ["BadDataFilesError", "scan_files"]

T = TypeVar("T")
_SHOWN = 3  # files named in a message; the rest are counted
log = logging.getLogger(__name__)


class BadDataFilesError(ConfigError):
    """Data files that cannot be read (reported as one line, before training starts)."""


def _reason(error: Exception, path: Path) -> str:
    text = str(error).replace(str(path), path.name).strip().splitlines()  # the full path is named once, outside
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _names(bad: list[tuple[Path, str]]) -> str:
    shown = "; ".join(f"{path} ({reason})" for path, reason in bad[:_SHOWN])
    return shown + (f"; and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else "")


def scan_files(files: Sequence[Path], read: Callable[[Path], T], skip_bad: bool, where: str,
               allow_none: bool = False) -> list[tuple[Path, T]]:
    """Open every file once; return ``(path, read(path))`` for those that work.

    Args:
        files: the files training would read.
        read: opens one file as training will, raising on a bad one (any exception).
        skip_bad: ``False``: raise :class:`BadDataFilesError` naming the bad files.
            ``True``: leave them out, with one warning line.
        where: the config key or folder the files come from, for the messages.
        allow_none: with ``skip_bad``, all of ``files`` may be bad (they are the new files of a
            dataset whose other files are already cached): no error for an empty result.

    Returns:
        ``(path, value)`` pairs of the readable files, in the order given.
    """
    good: list[tuple[Path, T]] = []
    bad: list[tuple[Path, str]] = []
    for path in files:
        try:
            good.append((path, read(path)))
        except Exception as error:  # noqa: BLE001 - readers raise many types for broken files
            bad.append((path, _reason(error, path)))
    if not bad:
        return good
    counted = f"{len(bad)} of {len(files)} files in {where} cannot be read"
    if not skip_bad:
        raise BadDataFilesError(f"{counted}: {_names(bad)}. Fix or remove them, or set data.skip_bad_files=true "
                                "to train without them")
    if not good and not allow_none:
        raise BadDataFilesError(f"{counted}: all of them, nothing left to train on: {_names(bad)}")
    log.warning("warning: skipping %s (data.skip_bad_files=true): %s", counted, _names(bad))
    return good
