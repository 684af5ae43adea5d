"""What the Flux task shows at validation: the user's prompts rendered at each step count, or digits.

* Prompt grid (a real or tiny FLUX.1 snapshot): the validation prompts, whose embeddings the data
  module cached in its one encoding pass, are sampled with the same seed per prompt at each of
  ``validation_num_steps`` and decoded by the VAE. ``samples/prompts_<step>.png`` has one row per
  prompt and one column per step count; the same grid goes to TensorBoard.
* Digits (identity codec): ``num_validation_samples`` samples per step count from the same noise,
  a Fréchet distance against the held-out digits and side-by-side panels.

Sampling runs in chunks of ``validation_batch_size`` from noise drawn once for all samples, so
the chunk size changes memory, not the samples.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import torch

__all__ = ["flux_schedule_shift", "render_prompt_grid", "digits_validation"]

_MIN_TILE_PIXELS = 64  # small tiles (the tiny snapshot's 32×32) are enlarged to stay visible


def flux_schedule_shift(scheduler_config: dict, image_tokens: int) -> float:
    """The time shift ``FluxPipeline`` samples with: ``exp(μ)``, μ linear in the image token count
    between ``(base_image_seq_len, base_shift)`` and ``(max_image_seq_len, max_shift)`` when
    ``use_dynamic_shifting`` (FLUX.1-dev: 0.5 at 256 tokens, 1.15 at 4096), else ``shift``.

    ``exp(μ)/(exp(μ) + 1/t − 1)`` equals :func:`~advtune.tasks.flow_matching.shift_sigmas` with
    ``shift = exp(μ)``, so validation samples on the pipeline's own sigmas.
    """
    if not scheduler_config.get("use_dynamic_shifting"):
        return float(scheduler_config.get("shift", 1.0))
    x0, x1 = scheduler_config.get("base_image_seq_len", 256), scheduler_config.get("max_image_seq_len", 4096)
    y0, y1 = scheduler_config.get("base_shift", 0.5), scheduler_config.get("max_shift", 1.15)
    mu = y0 + (y1 - y0) / (x1 - x0) * (image_tokens - x0)
    return math.exp(mu)


def render_prompt_grid(sample: Callable[..., torch.Tensor], prompts: Sequence[str], steps: Sequence[int],
                       seed: int, output_file: Path | None) -> torch.Tensor:
    """Render each prompt at each step count (seed ``seed + i`` for prompt ``i``).

    Args:
        sample: ``sample(prompt_index, generator, num_steps) -> (1, 3, H, W)`` in [-1, 1].
        output_file: PNG to write (``None``: rank ≠ 0 or sanity check, nothing written).

    Returns:
        The grid ``(3, H', W')`` in [0, 1] (rows: prompts, columns: step counts) for TensorBoard.
    """
    from advtune.visualize import make_image_grid

    tiles = [sample(i, torch.Generator().manual_seed(seed + i), n)
             for i in range(len(prompts)) for n in steps]
    images = torch.cat(tiles)
    upscale = max(1, -(-_MIN_TILE_PIXELS // max(images.shape[-2:])))
    grid = make_image_grid(images, nrow=len(steps), upscale=upscale, max_tiles=None)
    if output_file is not None:
        from PIL import Image

        output_file.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(output_file)
    return torch.from_numpy(grid).permute(2, 0, 1).float() / 255.0


def digits_validation(sample: Callable[..., torch.Tensor], references: torch.Tensor | None, steps: Sequence[int],
                      num_samples: int, seed: int, output_file: Path | None) -> dict[str, float]:
    """Digits Fréchet distance ``val/fd_{n}step`` per step count (1-channel references) and labelled panels."""
    metric = reference_stats = None
    if references is not None and references.shape[1] == 1:
        from advtune.metrics.digits_classifier import DigitsFrechetDistance

        metric = DigitsFrechetDistance()
        reference_stats = metric.reference_statistics(references)
    results: dict[str, float] = {}
    panels: dict[str, torch.Tensor] = {}
    for n in steps:
        images = sample(num_samples, torch.Generator().manual_seed(seed), n)  # same noise for every step count
        if metric is not None:
            results[f"val/fd_{n}step"] = float(metric(images, reference_stats))
        panels[f"{n} step{'s' if n > 1 else ''}"] = images[:64]
    if output_file is not None:
        from advtune.visualize import save_side_by_side

        save_side_by_side(panels, output_file)
    return results
