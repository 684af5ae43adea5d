"""Validation, sampling and grids of :class:`~advtune.tasks.style_transfer.StyleTransferTask`.

A mixin (not a module) kept apart so each file stays short. It uses the task's ``encode``,
``decode``, ``transfer`` and ``autoencoder``.

Validation logs, per batch (averaged by the trainer):

* ``val/content_mse``: ``‖z_y − z_c‖²`` (mean), how far the output latent moved from the content;
* ``val/style_distance``: the style loss ``‖μ(z_y) − μ(z_s)‖² + ‖σ(z_y) − σ(z_s)‖²`` of the output,
  next to ``val/style_distance_input``, the same distance for the untouched content latent (the
  starting point: the ratio of the two says how much of the gap the transfer closed);
* ``val/style_distance_rgb``: the same statistics distance on the decoded RGB images;
* the discriminator's view, when one was attached with :meth:`attach_discriminator`:
  ``val/d_logits_real`` (style references) and ``val/d_logits_fake`` (outputs), mean logits.

and writes ``transfer_step{step:06d}.png``: columns content | content through the autoencoder |
style | output, one validation pair per row.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advtune.losses.style import content_loss, style_loss

__all__ = ["StyleTransferValidation"]

_GRID_COLUMNS = ("content", "content (VQ)", "style", "output")


class StyleTransferValidation:
    """Validation hooks of the style-transfer task (mixin; see module docstring)."""

    def reset_validation(self) -> None:
        """Forget the grid images collected so far."""
        self._grid: dict[str, list[Tensor]] = {name: [] for name in _GRID_COLUMNS}

    def attach_discriminator(self, discriminator: nn.Module | None) -> None:
        """Let validation log the discriminator's view (kept out of the task's submodules and state)."""
        self._validation_discriminator = () if discriminator is None else (discriminator,)

    @torch.no_grad()
    def transfer_images(self, content: Tensor, style: Tensor) -> Tensor:
        """Images in, images out: ``(B, C, H, W)`` content and style → transferred ``(B, C, H, W)`` in [-1, 1]."""
        output, _ = self.decode(self.transfer(self.encode(content), self.encode(style)))
        return output.clamp(-1, 1)

    def _discriminator_view(self, style: Tensor, output: Tensor) -> dict[str, Tensor]:
        if not self._validation_discriminator:
            return {}
        discriminator = self._validation_discriminator[0]
        real_logits, _ = discriminator(style)
        fake_logits, _ = discriminator(output)
        return {"val/d_logits_real": torch.stack([x.float().mean() for x in real_logits]).mean(),
                "val/d_logits_fake": torch.stack([x.float().mean() for x in fake_logits]).mean()}

    @torch.no_grad()
    def validation_step(self, batch: Any) -> dict[str, Tensor]:
        """Content and style metrics of one batch (see module docstring); keeps the first pairs for the grid."""
        if not isinstance(batch, dict) or "content" not in batch or "style" not in batch:
            raise TypeError("StyleTransferTask.validation_step: batch must be a dict with 'content' and 'style'")
        content, style = batch["content"], batch["style"]
        z_content, z_style = self.encode(content), self.encode(style)
        z_out = self.transfer(z_content, z_style)
        output, _ = self.decode(z_out)
        metrics = {
            "val/content_mse": content_loss(z_out, z_content),
            "val/style_distance": style_loss(z_out, z_style),
            "val/style_distance_input": style_loss(z_content, z_style),
            "val/style_distance_rgb": style_loss(output.clamp(-1, 1), style),
            **self._discriminator_view(style, output),
        }
        kept = sum(len(x) for x in self._grid["content"])
        take = self.num_grid_images - kept
        if take > 0:
            columns = (content, self.decode(z_content)[0], style, output)
            for name, images in zip(_GRID_COLUMNS, columns):
                self._grid[name].append(images[:take].clamp(-1, 1).cpu())
        return metrics

    @torch.no_grad()
    def validation_epoch_end(self, output_dir: Path | None, step: int) -> dict[str, float]:
        """Write the content | content (VQ) | style | output grid; the metrics were logged per batch."""
        if output_dir is not None and self._grid["content"]:
            from advtune.visualize import save_side_by_side

            panels = {name: torch.cat(images) for name, images in self._grid.items()}
            save_side_by_side(panels, Path(output_dir) / f"transfer_step{step:06d}.png", nrow=1)
        self.reset_validation()
        return {}

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Outputs ``(N, C, H, W)`` for the first ``num_samples`` fixed validation pairs.

        The pairs are the style data module's validation pairs (round-robin over the styles), so
        successive calls are comparable; ``generator`` is unused (nothing is random).
        """
        from advtune.data.images import StyleTransferDataModule

        data = StyleTransferDataModule(patch_size=self.image_size, batch_size=num_samples,
                                       val_patches_per_image=max(1, math.ceil(num_samples / 5)))
        batch = next(iter(data.val_dataloader()))
        device = self.transfer.last_layer.device
        return self.transfer_images(batch["content"][:num_samples].to(device), batch["style"][:num_samples].to(device))
