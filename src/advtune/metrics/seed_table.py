"""Scores over training seeds as ``mean ± spread`` tables (markdown), for benchmarks and demos.

A quality claim needs several training seeds and their spread (DESIGN.md, "Measuring quality"). The
spread reported is the sample standard deviation over seeds (``ddof = 1``); every seed's value is
kept beside it in the JSON the scripts write, so a reader can see whether one seed decides a row.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["mean_spread", "format_mean_spread", "seed_table"]


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, sample standard deviation)`` of per-seed values (spread 0 for a single seed)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("mean_spread: no values")
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def format_mean_spread(values: Sequence[float], decimals: int = 1) -> str:
    """``"12.3 ± 1.4"`` (or ``"12.3"`` for one seed)."""
    mean, spread = mean_spread(values)
    return f"{mean:.{decimals}f}" if len(values) == 1 else f"{mean:.{decimals}f} ± {spread:.{decimals}f}"


def seed_table(
    rows: Mapping[str, Mapping[str, Sequence[float]]],
    columns: Sequence[str],
    decimals: Mapping[str, int] | int = 1,
    header: Mapping[str, str] | None = None,
) -> str:
    """A markdown table: one row per model, one ``mean ± spread`` cell per column.

    Args:
        rows: model name -> column -> per-seed values (a missing column prints ``–``).
        columns: the columns, in order.
        decimals: decimals per column (or one number for all).
        header: column -> title (default: the column name).
    """
    header = dict(header or {})
    titles = [header.get(column, column) for column in columns]
    lines = ["| model | " + " | ".join(titles) + " |", "|---|" + "---|" * len(columns)]
    for name, cells in rows.items():
        formatted = []
        for column in columns:
            places = decimals if isinstance(decimals, int) else decimals.get(column, 1)
            values = cells.get(column)
            formatted.append(format_mean_spread(values, places) if values else "–")
        lines.append(f"| {name} | " + " | ".join(formatted) + " |")
    return "\n".join(lines)
