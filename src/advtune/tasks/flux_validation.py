"""What the Flux task shows at validation: the user's prompts rendered at each step count, or digits.

* Prompt grid (a real or tiny FLUX.1 snapshot): the validation prompts, whose embeddings the data
  module cached in its one encoding pass, are sampled with the same seed per prompt at each of
  ``validation_num_steps`` and decoded by the VAE. ``samples/prompts_<step>.png`` has one row per
  prompt and one column per step count; the same grid goes to TensorBoard.
* Digits (identity codec): ``num_validation_samples`` samples per step count from the same noise,
  a Fréchet distance against the held-out digits and side-by-side panels.

A distillation run adds its teacher (at its own step count) as the first column of both.

Sampling runs in chunks of ``validation_batch_size`` from noise drawn once for all samples, so
the chunk size changes memory, not the samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from advtune.profiles import schedule_shift as flux_schedule_shift  # re-exported: the pipeline's shift

__all__ = ["flux_schedule_shift", "render_prompt_grid", "digits_validation"]

_MIN_TILE_PIXELS = 64  # small tiles (the tiny snapshot's 32×32) are enlarged to stay visible


def _metric_name(label: str) -> str:
    """``"2 steps"`` → ``"2step"``, ``"teacher, 32 steps"`` → ``"teacher_32step"`` (``val/fd_<name>``)."""
    words = label.replace(",", "").replace("steps", "step").split()
    return "_".join(words[:-2] + [words[-2] + words[-1]]) if len(words) >= 2 and words[-2].isdigit() else "_".join(words)


def render_prompt_grid(columns: Mapping[str, Callable[..., torch.Tensor]], prompts: Sequence[str], seed: int,
                       output_file: Path | None) -> torch.Tensor:
    """Render each prompt in each column (seed ``seed + i`` for prompt ``i`` in every column).

    Args:
        columns: label → ``sample(num_samples, generator, prompt_index) -> (1, 3, H, W)`` in [-1, 1]
            (one per step count; a distillation run puts its teacher first).
        output_file: PNG to write (``None``: rank ≠ 0 or sanity check, nothing written).

    Returns:
        The grid ``(3, H', W')`` in [0, 1] (rows: prompts, columns: ``columns``) for TensorBoard.
    """
    from advtune.visualize import make_image_grid

    tiles = [sample(1, torch.Generator().manual_seed(seed + i), i)
             for i in range(len(prompts)) for sample in columns.values()]
    images = torch.cat(tiles)
    upscale = max(1, -(-_MIN_TILE_PIXELS // max(images.shape[-2:])))
    grid = make_image_grid(images, nrow=len(columns), upscale=upscale, max_tiles=None)
    if output_file is not None:
        from PIL import Image

        output_file.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(output_file)
    return torch.from_numpy(grid).permute(2, 0, 1).float() / 255.0


def digits_validation(columns: Mapping[str, Callable[..., torch.Tensor]], references: torch.Tensor | None,
                      num_samples: int, seed: int, output_file: Path | None) -> dict[str, float]:
    """Digits Fréchet distance per column (1-channel references) and labelled panels.

    Args:
        columns: label → ``sample(num_samples, generator)``; ``"2 steps"`` logs ``val/fd_2step``,
            ``"teacher, 32 steps"`` ``val/fd_teacher_32step``. Every column starts from the same
            noise (seed ``seed``).
    """
    metric = reference_stats = None
    if references is not None and references.shape[1] == 1:
        from advtune.metrics.digits_classifier import DigitsFrechetDistance

        metric = DigitsFrechetDistance()
        reference_stats = metric.reference_statistics(references)
    results: dict[str, float] = {}
    panels: dict[str, torch.Tensor] = {}
    for label, sample in columns.items():
        images = sample(num_samples, torch.Generator().manual_seed(seed))  # same noise for every column
        if metric is not None:
            results[f"val/fd_{_metric_name(label)}"] = float(metric(images, reference_stats))
        panels[label] = images[:64]
    if output_file is not None:
        from advtune.visualize import save_side_by_side

        save_side_by_side(panels, output_file)
    return results
