"""``health.png``: the health monitor's curves, readable without TensorBoard (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_health"]

# background of each check by status (white: ok)
_STATUS_COLORS = {"warm-up": "#dddddd", "D winning": "#ffd8a8", "G collapsing": "#ffc9c9", "diverging": "#d0bfff"}
_PANELS = (
    ("discriminator accuracy and r_t", ("real_acc", "fake_acc", "r_t"), None),
    ("mean logits", ("logits_real", "logits_fake"), None),
    ("fake / real diversity", ("diversity",), "collapse_diversity"),
    ("balance", ("adaptive_weight", "grad_ratio", "ada_p"), None),
)


def plot_health(history: list[dict[str, Any]], thresholds: dict[str, float], path: str | Path) -> Path:
    """Four panels over generator steps, the background shaded by the status of each check.

    ``thresholds`` holds the lines to draw in the panels' units (``collapse_diversity``: the diversity
    under which G is collapsing); a missing key draws no line.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    steps = [row["step"] for row in history]
    figure, axes = plt.subplots(len(_PANELS), 1, figsize=(8, 9), sharex=True)
    for axis, (title, names, threshold) in zip(axes, _PANELS):
        for start, end, row in zip(steps, steps[1:] + steps[-1:], history):
            if row["status"] in _STATUS_COLORS:
                axis.axvspan(start, max(end, start + 1), color=_STATUS_COLORS[row["status"]], linewidth=0)
        for name in names:
            points = [(row["step"], row[name]) for row in history if name in row]
            if any(value != 0 for _, value in points):  # e.g. the adaptive weight reads 0 when it is off
                axis.plot(*zip(*points), label=name, linewidth=1.2)
        if threshold in thresholds:  # e.g. no collapse line where collapse is not judged
            axis.axhline(thresholds[threshold], color="black", linestyle="--", linewidth=0.8, label=threshold)
        axis.set_title(title, fontsize=9, loc="left")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7, loc="upper right")
        axis.grid(alpha=0.3)
    axes[-1].set_xlabel("generator updates")
    patches = [Patch(color=color, label=word) for word, color in _STATUS_COLORS.items()]
    figure.legend(handles=patches, loc="upper center", ncol=len(patches), fontsize=8, title="status (white: ok)",
                  title_fontsize=8)
    figure.tight_layout(rect=(0, 0, 1, 0.94))
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
