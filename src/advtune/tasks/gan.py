"""The classic GAN on 8×8 digits: noise → image, no base loss (Goodfellow et al. 2014).

Real is a batch of data images, fake is ``G(z)`` with ``z ~ N(0, I)``; the adversarial loss is the
generator's only objective. Validation draws a fixed set of samples (fixed seed, so successive
validations are comparable), scores them with the digits Fréchet distance
(:mod:`advtune.metrics.digits_classifier`) against the validation images, and writes a PNG grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from advtune.checks import check_integer
from advtune.tasks.base import AdversarialTask, TaskOutput

__all__ = ["DigitsGANTask"]


class DigitsGANTask(AdversarialTask):
    """Generator side of the digits GAN.

    Args:
        generator: maps ``(B, latent_dim)`` noise to ``(B, 1, 8, 8)`` images in [-1, 1]
            (:class:`~advtune.models.gan.MLPGenerator` or
            :class:`~advtune.models.gan.DCGANGenerator`).
        latent_dim: size of the noise vector.
        num_val_samples: samples drawn at each validation for the digits FID.
        grid_size: how many of them go into the saved PNG grid.
        sample_seed: seed of the validation noise (the same samples' noise at every validation).
    """

    def __init__(
        self,
        generator: nn.Module,
        latent_dim: int,
        num_val_samples: int = 500,
        grid_size: int = 64,
        sample_seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(generator, nn.Module):
            raise TypeError(
                f"DigitsGANTask: generator must be an nn.Module, got {type(generator).__name__}"
            )
        if latent_dim < 1:
            raise ValueError(f"DigitsGANTask: latent_dim must be >= 1, got {latent_dim}")
        if num_val_samples < 2:
            raise ValueError(f"DigitsGANTask: num_val_samples must be >= 2, got {num_val_samples}")
        check_integer("task.grid_size", grid_size, minimum=0)  # 0: no grid
        check_integer("task.sample_seed", sample_seed, minimum=0, maximum=2**32 - 1)
        self.generator = generator
        self.latent_dim = int(latent_dim)
        self.num_val_samples = int(num_val_samples)
        self.grid_size = int(grid_size)
        self.sample_seed = int(sample_seed)
        # Plain attributes, not submodules: the metric's classifier and the cached reference
        # statistics stay out of state_dict and checkpoints (both are recomputed on demand).
        self._frechet = None
        self._reference_statistics: tuple[np.ndarray, np.ndarray] | None = None
        self._reference_source: torch.Tensor | None = None  # the images the cache was built on
        self._reference_images: list[torch.Tensor] = []

    def _generator_device(self) -> torch.device:
        parameter = next(self.generator.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def generator_predict(self, batch: Any) -> TaskOutput:
        """``z ~ N(0, I)`` (batch-size many), ``fake = G(z)``, ``real = batch["image"]``."""
        images = batch["image"] if isinstance(batch, dict) else batch
        if not isinstance(images, torch.Tensor):
            raise TypeError(
                "DigitsGANTask.generator_predict: batch must be a dict with an 'image' tensor "
                f"or a tensor, got {type(batch).__name__}"
            )
        z = torch.randn(images.shape[0], self.latent_dim, device=images.device)
        fake = self.generator(z)
        if images.numel() != fake.numel():
            raise ValueError(
                f"DigitsGANTask: real images {tuple(images.shape)} do not match the generator's "
                f"output {tuple(fake.shape)}"
            )
        return TaskOutput(real=images.reshape(fake.shape), fake=fake)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``num_samples`` images ``(N, 1, 8, 8)`` in [-1, 1], with G in eval mode.

        ``generator`` (a ``torch.Generator``, on any device) makes the noise reproducible.
        """
        device = self._generator_device()
        noise_device = generator.device if generator is not None else device
        z = torch.randn(num_samples, self.latent_dim, generator=generator, device=noise_device)
        was_training = self.generator.training
        self.generator.eval()  # BatchNorm running statistics, and no update of them
        try:
            return self.generator(z.to(device)).clamp(-1.0, 1.0)
        finally:
            self.generator.train(was_training)

    @torch.no_grad()
    def validation_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """Collect this validation's real images (360 × 8×8: a few kB) for the FID reference."""
        images = batch["image"] if isinstance(batch, dict) else batch
        self._reference_images.append(images.detach().cpu())
        return {}

    def _reference(self) -> tuple[np.ndarray, np.ndarray]:
        """Feature statistics of the validation images, recomputed only when they change.

        Lightning's sanity check validates on a couple of batches only; keying the cache on the
        images seen keeps those partial statistics from being reused for the full loop.
        """
        if self._reference_images:
            images = torch.cat(self._reference_images)
            self._reference_images = []
        elif self._reference_statistics is not None:
            return self._reference_statistics
        else:  # validation_epoch_end called without a validation loop: the default split
            from advtune.data.digits import load_digits_images

            images, _ = load_digits_images("val")
        if images.ndim == 2:  # a flattening data module gives (N, H*W)
            side = int(round(images.shape[1] ** 0.5))
            images = images.reshape(-1, 1, side, side)
        if self._reference_source is None or not torch.equal(images, self._reference_source):
            self._reference_statistics = self._metric().reference_statistics(images)
            self._reference_source = images
        return self._reference_statistics

    def _metric(self):
        if self._frechet is None:
            from advtune.metrics.digits_classifier import DigitsFrechetDistance

            self._frechet = DigitsFrechetDistance()
        return self._frechet

    @torch.no_grad()
    def validation_epoch_end(self, output_dir: Path | None, step: int) -> dict[str, float]:
        """Digits FID of ``num_val_samples`` fixed-seed samples; PNG grid of the first ones.

        Returns:
            ``{"val/fid_digits": float}``; writes ``output_dir/samples_step{step:06d}.png``.
        """
        reference = self._reference()
        noise_generator = torch.Generator().manual_seed(self.sample_seed)
        samples = self.sample(self.num_val_samples, noise_generator)
        fid = self._metric()(samples, reference)
        if output_dir is not None and self.grid_size > 0:
            from advtune.visualize import save_image_grid

            grid_path = Path(output_dir) / f"samples_step{step:06d}.png"
            save_image_grid(samples[: self.grid_size], grid_path)
        return {"val/fid_digits": fid}

    def export(self, directory: str | Path) -> Path:
        """Write the generator alone (``generator.pt``, :func:`advtune.io.save_model`)."""
        from advtune.io import save_model

        metadata = {"task": type(self).__name__, "latent_dim": self.latent_dim}
        return save_model(self.generator, Path(directory) / "generator.pt", metadata=metadata)
