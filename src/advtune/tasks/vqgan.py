"""VQGAN: a VQ autoencoder trained with L1 + codebook losses and a PatchGAN (Esser et al. 2021).

Generator loss, as taming-transformers' ``VQLPIPSWithDiscriminator`` without the perceptual term
(LPIPS needs pretrained VGG weights, which this project does not download)::

    L_G = λ_rec·|x − x̂|₁ + λ_code·L_VQ + s·λ_adv·w_adapt·L_GAN(D(x̂))

The task supplies the first two terms (``base_losses`` ``"recon_l1"`` and ``"codebook"``) and the
decoder's last conv weight as ``last_layer``; the :class:`~advtune.AdversarialLossCalculator`
adds the adversarial term with the adaptive weight ``w_adapt`` (``use_adaptive_weight: true``),
``disc_start`` (``warmup_steps``) and ``disc_factor`` (folded into ``adversarial_weight``).
The codebook term does not depend on the decoder, so the adaptive weight's ``‖∇ base‖`` at the
last layer is that of the reconstruction alone, as in taming.

:func:`scaled_learning_rate` is taming's learning-rate rule (``main.py``), used by the configs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from advtune.models.vector_quantizer import codebook_perplexity, dead_code_count
from advtune.models.vqgan import VQAutoencoder, tiny_vq_autoencoder
from advtune.tasks.base import AdversarialTask, TaskOutput

__all__ = ["VQGANTask", "psnr", "scaled_learning_rate", "sharpness_ratio"]


def scaled_learning_rate(base_learning_rate: float, batch_size: int, accumulate_grad_batches: int = 1,
                         num_devices: int = 1) -> float:
    """taming-transformers' rule: ``lr = accumulate_grad_batches · num_devices · batch_size · base_lr``.

    The optimizers' ``lr`` in ``experiment=vqgan`` and ``experiment=style_transfer`` is this function
    (a Hydra ``_target_``), so changing ``data.batch_size`` or ``module.accumulate_grad_batches``
    rescales it as taming's ``main.py`` does (base 4.5e-6 at batch 8 gives 3.6e-5).
    """
    for name, value in (("batch_size", batch_size), ("accumulate_grad_batches", accumulate_grad_batches),
                        ("num_devices", num_devices)):
        if int(value) != value or value < 1:
            raise ValueError(f"scaled_learning_rate: {name} must be an integer >= 1, got {value!r}")
    if not base_learning_rate > 0:
        raise ValueError(f"scaled_learning_rate: base_learning_rate must be > 0, got {base_learning_rate}")
    return float(accumulate_grad_batches * num_devices * batch_size * base_learning_rate)


def psnr(images: Tensor, reference: Tensor) -> Tensor:
    """Peak signal-to-noise ratio per image in dB, for images in [-1, 1] (peak-to-peak 2): ``(B,)``."""
    mse = (images.float().clamp(-1, 1) - reference.float()).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(4.0 / mse.clamp_min(1e-10))


def sharpness_ratio(images: Tensor, reference: Tensor) -> Tensor:
    """Mean absolute finite-difference gradient of ``images`` over that of ``reference`` (scalar).

    1 means as much fine detail as the reference; an L1-trained autoencoder blurs (< 1). Not a
    fidelity measure: invented texture raises it too, which is why it is read next to the PSNR.
    """
    def gradient_energy(x: Tensor) -> Tensor:
        x = x.float()
        return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()

    return gradient_energy(images.clamp(-1, 1)) / gradient_energy(reference).clamp_min(1e-8)


def _images(batch: Any, where: str) -> Tensor:
    images = batch["image"] if isinstance(batch, dict) else batch
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise TypeError(f"{where}: batch must be a dict with an 'image' tensor (B, C, H, W) or such a tensor")
    return images


class VQGANTask(AdversarialTask):
    """Generator side of VQGAN: real = data patches, fake = their reconstructions.

    Args:
        autoencoder: the model to train (default :func:`~advtune.models.vqgan.tiny_vq_autoencoder`).
        reconstruction_weight: λ_rec of the L1 reconstruction loss.
        codebook_weight: λ_code of the quantizer loss (taming's ``codebook_weight``, 1.0).
        num_grid_images: validation patches shown in the input/reconstruction grid.
        image_size: patch side used by :meth:`sample` when no validation ran yet.
    """

    def __init__(self, autoencoder: VQAutoencoder | None = None, reconstruction_weight: float = 1.0,
                 codebook_weight: float = 1.0, num_grid_images: int = 16, image_size: int = 64) -> None:
        super().__init__()
        if autoencoder is not None and not isinstance(autoencoder, VQAutoencoder):
            raise TypeError(f"VQGANTask: autoencoder must be a VQAutoencoder, got {type(autoencoder).__name__}")
        if reconstruction_weight < 0 or codebook_weight < 0:
            raise ValueError(f"VQGANTask: loss weights must be >= 0, got {reconstruction_weight}, {codebook_weight}")
        self.autoencoder = autoencoder if autoencoder is not None else tiny_vq_autoencoder()
        self.reconstruction_weight = float(reconstruction_weight)
        self.codebook_weight = float(codebook_weight)
        self.num_grid_images = int(num_grid_images)
        self.image_size = int(image_size)
        self._grid: dict[str, list[Tensor]] = {"input": [], "reconstruction": []}
        self._val_indices: list[Tensor] = []

    @property
    def generator(self) -> VQAutoencoder:
        """The model that trains (``init_generator=...`` loads into it)."""
        return self.autoencoder

    def generator_predict(self, batch: Any) -> TaskOutput:
        """Reconstruct ``batch["image"]`` ``(B, C, H, W)``; base losses ``recon_l1`` and ``codebook``."""
        images = _images(batch, "VQGANTask.generator_predict")
        output = self.autoencoder(images)
        quantized = output.quantized
        recon_l1 = F.l1_loss(output.reconstruction, images)
        num_codes = self.autoencoder.quantizer.num_codes
        logs = {
            "g/perplexity": codebook_perplexity(quantized.indices, num_codes),
            "g/dead_codes": dead_code_count(quantized.indices, num_codes),
            "g/commitment": quantized.commitment_loss.detach(),
            "g/psnr": psnr(output.reconstruction.detach(), images).mean(),
        }
        return TaskOutput(
            real=images,
            fake=output.reconstruction,
            base_losses={"recon_l1": self.reconstruction_weight * recon_l1,
                         "codebook": self.codebook_weight * quantized.loss},
            last_layer=self.autoencoder.last_layer,
            logs=logs,
        )

    @torch.no_grad()
    def validation_step(self, batch: Any) -> dict[str, Tensor]:
        """``val/psnr``, ``val/recon_l1``, ``val/sharpness_ratio`` of one batch; keeps patches for the grid."""
        images = _images(batch, "VQGANTask.validation_step")
        output = self.autoencoder(images)
        self._val_indices.append(output.quantized.indices.flatten().cpu())
        kept = sum(len(x) for x in self._grid["input"])
        if kept < self.num_grid_images:
            self._grid["input"].append(images[: self.num_grid_images - kept].cpu())
            self._grid["reconstruction"].append(output.reconstruction[: self.num_grid_images - kept].cpu())
        return {"val/psnr": psnr(output.reconstruction, images).mean(),
                "val/recon_l1": F.l1_loss(output.reconstruction, images),
                "val/sharpness_ratio": sharpness_ratio(output.reconstruction, images)}

    @torch.no_grad()
    def validation_epoch_end(self, output_dir: Path | None, step: int) -> dict[str, float]:
        """Codebook usage over the whole validation set; writes ``reconstructions_step{step:06d}.png``."""
        metrics: dict[str, float] = {}
        if self._val_indices:
            indices = torch.cat(self._val_indices)
            num_codes = self.autoencoder.quantizer.num_codes
            metrics = {"val/perplexity": float(codebook_perplexity(indices, num_codes)),
                       "val/dead_codes": float(dead_code_count(indices, num_codes))}
        if output_dir is not None and self._grid["input"]:
            from advtune.visualize import save_side_by_side

            panels = {name: torch.cat(images) for name, images in self._grid.items()}
            nrow = max(1, math.isqrt(len(panels["input"])))
            save_side_by_side(panels, Path(output_dir) / f"reconstructions_step{step:06d}.png", nrow=nrow)
        self._grid = {"input": [], "reconstruction": []}
        self._val_indices = []
        return metrics

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Reconstructions ``(N, C, H, W)`` of the first ``num_samples`` fixed validation patches.

        An autoencoder has no prior to sample from; the fixed patches make successive calls
        comparable. ``generator`` is unused (nothing is random).
        """
        from advtune.data.images import ImagePatchDataModule

        data = ImagePatchDataModule(patch_size=self.image_size, batch_size=num_samples,
                                    val_patches_per_image=max(1, math.ceil(num_samples / 6)))
        images = next(iter(data.val_dataloader()))["image"][:num_samples]
        device = self.autoencoder.last_layer.device
        was_training = self.autoencoder.training
        self.autoencoder.eval()
        try:
            return self.autoencoder(images.to(device)).reconstruction.clamp(-1, 1)
        finally:
            self.autoencoder.train(was_training)

    def export(self, directory: str | Path) -> Path:
        """Write the autoencoder (``vq_autoencoder.pt``, :func:`advtune.io.save_model`)."""
        from advtune.io import save_model

        return save_model(self.autoencoder, Path(directory) / "vq_autoencoder.pt",
                          metadata={"task": type(self).__name__})
