"""The error a user's input raises: the CLI prints it as one line (``error: ...``, exit code 2).

It lives below every other module (``config``, ``checks``, ``profiles`` all raise it), so raising
it never closes an import circle; :mod:`advtune.config` re-exports it.
"""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A config problem, reported to the user as one line."""
