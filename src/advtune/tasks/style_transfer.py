"""Style transfer in the frozen latent space of a trained VQ autoencoder, with a PatchGAN.

Encoder ``E``, quantizer ``Q`` and decoder ``G`` come from a trained
:class:`~advtune.models.vqgan.VQAutoencoder` and stay frozen (``Q`` optionally trains); only the
:class:`~advtune.models.style_transfer.StyleTransferModule` ``T`` learns::

    z_c = E(x_content),  z_s = E(x_style),  z_y = T(z_c, z_s),  y = G(Q(z_y))
    L_G = λ_rev·‖z_y − z_c‖² + λ_style·(‖μ(z_y) − μ(z_s)‖² + ‖σ(z_y) − σ(z_s)‖²)
          + λ_code·L_VQ(z_y) [+ λ_id·‖T(z_c, z_c) − z_c‖²] + s·λ_adv·w_adapt·L_GAN(D(y))

Choices (ours, written down):

* **The discriminator works in image space.** Real = the style reference images ``x_style``,
  fake = the decoded outputs ``y``: a PatchGAN is built for image patches, and judging the decoded
  output is what a user sees. The adversarial gradient reaches ``T`` through the frozen decoder
  and the quantizer's straight-through estimator.
* **The adaptive weight uses T's last layer** (``T.conv_out.weight``), the generator's last
  *trainable* layer: the decoder's last conv is frozen, so no gradient can be taken there. The base
  and adversarial gradients are compared where both act, as taming does on its decoder.
* **Quantized output** (``quantize_output``, default on): ``z_y`` is snapped to the codebook before
  decoding, so the frozen decoder only sees inputs of its training distribution; the codebook loss
  λ_code·L_VQ(z_y) then applies. With a frozen codebook only its commitment part has a gradient
  (towards ``T``), which keeps ``z_y`` near codebook vectors; with ``freeze_quantizer=False`` the
  codebook term trains the codes as well.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advtune.losses.style import content_loss, identity_loss, style_loss
from advtune.models.style_transfer import StyleTransferModule
from advtune.models.vector_quantizer import codebook_perplexity
from advtune.models.vqgan import VQAutoencoder, tiny_vq_autoencoder
from advtune.tasks.base import AdversarialTask, TaskOutput
from advtune.tasks.style_transfer_validation import StyleTransferValidation

__all__ = ["StyleTransferTask"]


def _pair(batch: Any, where: str) -> tuple[Tensor, Tensor]:
    if not isinstance(batch, dict) or "content" not in batch or "style" not in batch:
        raise TypeError(f"{where}: batch must be a dict with 'content' and 'style' image tensors (B, C, H, W)")
    return batch["content"], batch["style"]


class StyleTransferTask(StyleTransferValidation, AdversarialTask):
    """Generator side of latent style transfer (see module docstring).

    Args:
        autoencoder_path: file written by ``save_model`` to load the VQ autoencoder from: the
            ``vq_autoencoder.pt`` an ``experiment=vqgan`` run writes into its ``output_dir``.
        autoencoder: an autoencoder object instead of a path; with neither, a fresh
            :func:`~advtune.models.vqgan.tiny_vq_autoencoder` (untrained: for tests only).
        freeze_quantizer: keep the codebook frozen too (encoder and decoder always are).
        quantize_output: snap ``z_y`` to the codebook before decoding.
        reverse_weight: λ_rev of the content (reverse) loss.
        style_weight: λ_style of the style loss.
        codebook_weight: λ_code of the quantizer loss on ``z_y`` (only with ``quantize_output``).
        identity_weight: λ_id of the identity loss (0 disables it and its extra forward).
        hidden_channels: width of ``T``.
        num_blocks: modulated residual blocks of ``T``.
        style_dim: size of ``T``'s style code.
        num_grid_images: validation pairs shown in the content | content (VQ) | style | output grid.
        image_size: patch side used by :meth:`sample` when no validation ran yet.
        style_short_side: short side the training style images were resized to; written into the
            export's metadata so ``advtune stylize`` resizes a user's style image the same way
            (the style code depends on the texture's scale). ``None``: unknown.
    """

    def __init__(self, autoencoder_path: str | None = None, autoencoder: VQAutoencoder | None = None,
                 freeze_quantizer: bool = True, quantize_output: bool = True, reverse_weight: float = 1.0,
                 style_weight: float = 10.0, codebook_weight: float = 1.0, identity_weight: float = 0.0,
                 hidden_channels: int = 64, num_blocks: int = 2, style_dim: int = 64,
                 num_grid_images: int = 8, image_size: int = 64, style_short_side: int | None = None) -> None:
        super().__init__()
        if autoencoder_path is not None and autoencoder is not None:
            raise ValueError("StyleTransferTask: give autoencoder_path or autoencoder, not both")
        weights = {"reverse_weight": reverse_weight, "style_weight": style_weight,
                   "codebook_weight": codebook_weight, "identity_weight": identity_weight}
        for name, value in weights.items():
            if value < 0:
                raise ValueError(f"StyleTransferTask: {name} must be >= 0, got {value}")
        if autoencoder_path is not None:
            from advtune.io import load_model

            if not Path(autoencoder_path).is_file():
                raise ValueError(f"StyleTransferTask: autoencoder_path {autoencoder_path} does not exist; "
                                 "train and export one with `advtune train experiment=vqgan` first")
            autoencoder = load_model(autoencoder_path, map_location="cpu")
        if autoencoder is None:
            warnings.warn("StyleTransferTask: no autoencoder_path given, using an UNTRAINED tiny VQ autoencoder "
                          "(tests only); run `advtune train experiment=vqgan` first, then give "
                          "task.autoencoder_path=outputs/vqgan/vq_autoencoder.pt", stacklevel=2)
            autoencoder = tiny_vq_autoencoder()
        if not isinstance(autoencoder, VQAutoencoder):
            raise TypeError("StyleTransferTask: the autoencoder must be a VQAutoencoder, "
                            f"got {type(autoencoder).__name__}")
        self.autoencoder_path = None if autoencoder_path is None else str(autoencoder_path)
        self.autoencoder = autoencoder
        self.autoencoder.requires_grad_(False)
        self.freeze_quantizer = bool(freeze_quantizer)
        if not self.freeze_quantizer:
            self.autoencoder.quantizer.requires_grad_(True)
        self.transfer = StyleTransferModule(autoencoder.quantizer.code_dim, hidden_channels, num_blocks, style_dim)
        self.quantize_output = bool(quantize_output)
        self.weights = {key.removesuffix("_weight"): float(value) for key, value in weights.items()}
        self.num_grid_images = int(num_grid_images)
        self.image_size = int(image_size)
        self.style_short_side = None if style_short_side is None else int(style_short_side)
        self._validation_discriminator: tuple[nn.Module, ...] = ()
        self.reset_validation()

    @property
    def generator(self) -> StyleTransferModule:
        """The model that trains, ``T`` (``init_generator=...`` loads into it)."""
        return self.transfer

    def train(self, mode: bool = True) -> "StyleTransferTask":
        """Frozen parts stay in eval mode whatever the trainer asks (no dropout in them)."""
        super().train(mode)
        self.autoencoder.eval()
        if not self.freeze_quantizer:
            self.autoencoder.quantizer.train(mode)
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """``T``'s parameters, plus the codebook when ``freeze_quantizer=False``."""
        parameters = list(self.transfer.parameters())
        if not self.freeze_quantizer:
            parameters += list(self.autoencoder.quantizer.parameters())
        return parameters

    def encode(self, images: Tensor) -> Tensor:
        """Frozen encoder: images ``(B, C, H, W)`` → latents ``(B, code_dim, h, w)``, no graph."""
        with torch.no_grad():
            return self.autoencoder.encode(images)

    def decode(self, z: Tensor) -> tuple[Tensor, Any]:
        """Latent → image through the (optional) quantizer and the frozen decoder, keeping ``z``'s graph."""
        quantized = self.autoencoder.quantizer(z) if self.quantize_output else None
        return self.autoencoder.decode(quantized.quantized if quantized is not None else z), quantized

    def generator_predict(self, batch: Any) -> TaskOutput:
        """Transfer ``batch["content"]`` towards ``batch["style"]``; real = style, fake = output images."""
        content, style = _pair(batch, "StyleTransferTask.generator_predict")
        z_content, z_style = self.encode(content), self.encode(style)
        z_out = self.transfer(z_content, z_style)
        rev, sty = content_loss(z_out, z_content), style_loss(z_out, z_style)
        base_losses = {"rev": self.weights["reverse"] * rev, "style": self.weights["style"] * sty}
        output, quantized = self.decode(z_out)
        logs = {"g/content_mse": rev.detach(), "g/style_distance": sty.detach()}
        if quantized is not None:
            base_losses["code"] = self.weights["codebook"] * quantized.loss
            logs["g/perplexity"] = codebook_perplexity(quantized.indices, self.autoencoder.quantizer.num_codes)
        if self.weights["identity"] > 0:
            base_losses["id"] = self.weights["identity"] * identity_loss(self.transfer(z_content, z_content), z_content)
        return TaskOutput(real=style, fake=output, base_losses=base_losses,
                          last_layer=self.transfer.last_layer, logs=logs)

    def export(self, directory: str | Path) -> Path:
        """Write ``style_transfer.pt`` (``T``, the generator) and ``vq_autoencoder.pt`` (needed to use it)."""
        from advtune.io import save_model

        directory = Path(directory)
        save_model(self.autoencoder, directory / "vq_autoencoder.pt", metadata={"task": type(self).__name__})
        metadata = {"task": type(self).__name__, "autoencoder_file": "vq_autoencoder.pt",
                    "quantize_output": self.quantize_output, "style_short_side": self.style_short_side}
        return save_model(self.transfer, directory / "style_transfer.pt", metadata=metadata)
