"""Argument checks that name the config key: ``data.num_workers=-7 is not valid: expected an integer >= 0``.

Objects check their own arguments with these when they are built, so ``advtune validate-config``
and ``advtune train`` refuse the same values, before the first step, in one line that names the key,
the value and what is allowed. The error is :class:`~advtune.config.ConfigError`, a ``ValueError``:
code that builds the objects itself gets a ``ValueError`` as usual.

Numbers are refused when they are NaN, and when they are infinite unless ``allow_infinite``; booleans
are never taken for integers (``true`` is not a count).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from advtune.errors import ConfigError

__all__ = ["check_integer", "check_number", "check_choice", "check_flag", "check_loader_settings", "refuse"]


def refuse(key: str, value: Any, allowed: str) -> None:
    """Raise the one-line :class:`ConfigError` for ``key=value`` (``allowed``: what would be valid)."""
    shown = "null" if value is None else repr(value)
    raise ConfigError(f"{key}={shown} is not valid: expected {allowed}")


def _bounds(minimum: float | None, maximum: float | None, above: float | None, below: float | None) -> str:
    """``">= 0"``, ``"< 1"``, ``"in [0, 1)"``... for the bounds given (inclusive ``minimum``/``maximum``)."""
    low = ("[", minimum) if minimum is not None else ("(", above) if above is not None else None
    high = ("]", maximum) if maximum is not None else (")", below) if below is not None else None
    if low and high:
        return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]:g}"
    return f"{'<=' if high[0] == ']' else '<'} {high[1]:g}" if high else ""


def check_integer(key: str, value: Any, minimum: int | None = None, maximum: int | None = None,
                  allow_none: bool = False) -> None:
    """``value`` is an integer (not a bool) within ``[minimum, maximum]`` (``None``: unbounded)."""
    if value is None and allow_none:
        return
    if minimum is not None and maximum is not None and maximum - minimum > 1e6:  # a wide range reads better in full
        allowed = f"an integer from {minimum} to {maximum}"
    else:
        allowed = " ".join(part for part in ("an integer", _bounds(minimum, maximum, None, None)) if part)
    allowed += " or null" if allow_none else ""
    if isinstance(value, bool) or not isinstance(value, int):
        refuse(key, value, allowed)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        refuse(key, value, allowed)


def check_number(key: str, value: Any, minimum: float | None = None, maximum: float | None = None, *,
                 above: float | None = None, below: float | None = None, allow_none: bool = False,
                 allow_infinite: bool = False) -> None:
    """``value`` is a real number (not NaN, finite unless ``allow_infinite``) within the bounds.

    ``minimum``/``maximum`` are inclusive, ``above``/``below`` exclusive.
    """
    if value is None and allow_none:
        return
    allowed = " ".join(part for part in ("a number", _bounds(minimum, maximum, above, below)) if part)
    allowed += " or null" if allow_none else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        refuse(key, value, allowed)
    if math.isinf(value) and not allow_infinite:
        refuse(key, value, f"{allowed} (finite)")
    if ((minimum is not None and value < minimum) or (maximum is not None and value > maximum)
            or (above is not None and value <= above) or (below is not None and value >= below)):
        refuse(key, value, allowed)


def check_choice(key: str, value: Any, choices: Iterable[Any]) -> None:
    """``value`` is one of ``choices``."""
    options = tuple(choices)
    if not any(type(value) is type(option) and value == option for option in options):  # True is not 1
        refuse(key, value, "one of " + ", ".join(str(o) for o in options))


def check_flag(key: str, value: Any) -> None:
    """``value`` is ``true`` or ``false``."""
    if not isinstance(value, bool):
        refuse(key, value, "true/false")


def check_loader_settings(prefix: str, batch_size: Any, num_workers: Any, seed: Any = 0) -> None:
    """What every data module passes to its loaders: ``batch_size >= 1``, ``num_workers >= 0`` and a
    seed numpy and torch both take (``0 .. 2**32 - 1``)."""
    check_integer(f"{prefix}.batch_size", batch_size, minimum=1)
    check_integer(f"{prefix}.num_workers", num_workers, minimum=0)
    check_integer(f"{prefix}.seed", seed, minimum=0, maximum=2**32 - 1)
