"""The trained style-transfer model that ``advtune stylize`` applies, loaded safely from what a run leaves.

Three things a user may point at, all loaded without unpickling code:

* a Lightning checkpoint of ``experiment=style_transfer`` (``.../checkpoints/last.ckpt``), rebuilt
  by :func:`advtune.runner.load_run` from the config stored in it (``_target_`` allow-list); the
  generator EMA is used when the run kept one, as ``advtune sample`` and the export do;
* the exported ``style_transfer.pt`` (written at the end of every run into ``output_dir`` and by
  ``advtune export``), with the ``vq_autoencoder.pt`` named in its metadata next to it
  (:func:`advtune.io.load_model`, allow-listed classes only);
* a folder holding either: ``style_transfer.pt`` first, else ``checkpoints/last.ckpt``.

:class:`Stylizer` is the inference path of :class:`~advtune.tasks.style_transfer.StyleTransferTask`:
``y = G(Q(T(E(x_content), s)))`` with the style code ``s`` computed once per style image.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from advtune.config import ConfigError
from advtune.models.style_transfer import StyleTransferModule
from advtune.models.vqgan import VQAutoencoder

__all__ = ["MIN_STYLE_SIDE", "Stylizer", "load_style_image", "load_stylizer", "resolve_model_files"]

_EXPORT_NAME = "style_transfer.pt"
MIN_STYLE_SIDE = 16  # pixels; the style latent needs a few positions for its statistics
_FLAT_STYLE_STD = 0.01  # std of a style image in [-1, 1] under which it holds nothing to transfer


class Stylizer:
    """Frozen autoencoder ``E, Q, G`` and transfer module ``T`` in eval mode, for images of any size.

    Args:
        autoencoder: the VQ autoencoder the transfer module was trained in.
        transfer: the trained :class:`~advtune.models.style_transfer.StyleTransferModule`.
        quantize_output: snap ``T``'s output to the codebook before decoding (as in training).
        style_short_side: short side the run's style images were resized to (``None``: unknown).
    """

    def __init__(self, autoencoder: VQAutoencoder, transfer: StyleTransferModule, quantize_output: bool,
                 style_short_side: int | None = None) -> None:
        if transfer.latent_channels != autoencoder.quantizer.code_dim:
            raise ConfigError(f"stylize: the transfer module works on {transfer.latent_channels}-channel latents, "
                              f"the autoencoder has {autoencoder.quantizer.code_dim}-dimensional codes")
        self.autoencoder = autoencoder.eval()
        self.transfer = transfer.eval()
        self.quantize_output = bool(quantize_output)
        self.style_short_side = style_short_side

    @property
    def downsampling_factor(self) -> int:
        """Image sides must be multiples of this (the autoencoder's ``f``)."""
        return int(self.autoencoder.downsampling_factor)

    def to(self, device: torch.device | str) -> "Stylizer":
        """Move both networks to ``device``."""
        self.autoencoder.to(device)
        self.transfer.to(device)
        return self

    @torch.no_grad()
    def style_code(self, style: Tensor) -> Tensor:
        """Style image ``(1, 3, H, W)`` in [-1, 1] (sides multiples of ``f``) → style code ``(1, style_dim)``."""
        return self.transfer.style_code(self.autoencoder.encode(style))

    @torch.no_grad()
    def stylize(self, content: Tensor, style_code: Tensor) -> Tensor:
        """Content ``(B, 3, H, W)`` in [-1, 1] → stylized ``(B, 3, H, W)`` in [-1, 1]."""
        z_out = self.transfer.apply_style(self.autoencoder.encode(content), style_code)
        if self.quantize_output:
            z_out = self.autoencoder.quantizer(z_out).quantized
        return self.autoencoder.decode(z_out).clamp(-1, 1)

    @torch.no_grad()
    def reconstruct(self, content: Tensor) -> Tensor:
        """Content through the autoencoder alone ``(B, 3, H, W)`` (what the decoder can show of it)."""
        return self.autoencoder(content).reconstruction.clamp(-1, 1)


def resolve_model_files(path: str | Path) -> list[Path]:
    """The files ``path`` stands for: a ``.ckpt``, or ``style_transfer.pt`` and its autoencoder file."""
    path = Path(path).expanduser()
    if path.is_dir():
        for candidate in (path / _EXPORT_NAME, path / "checkpoints" / "last.ckpt"):
            if candidate.is_file():
                return resolve_model_files(candidate)
        raise ConfigError(f"stylize: {path} holds neither {_EXPORT_NAME} nor checkpoints/last.ckpt of a "
                          "style-transfer run")
    if not path.is_file():
        raise ConfigError(f"stylize: model not found: {path}")
    if path.suffix != ".pt":
        return [path]
    return [path, path.with_name(_export_metadata(path).get("autoencoder_file", "vq_autoencoder.pt"))]


def _export_metadata(path: Path) -> dict[str, Any]:
    from advtune.io import load_training_state

    try:
        metadata = load_training_state(path).get("metadata") or {}
    except Exception as error:  # noqa: BLE001 - any failure: not a file advtune's save_model wrote
        raise ConfigError(f"stylize: cannot read {path}: {str(error).splitlines()[0]}") from None
    if metadata.get("task") != "StyleTransferTask":
        written_by = metadata.get("task") or "something else"
        raise ConfigError(f"stylize: {path} was written by {written_by}, not by a style-transfer run "
                          "(experiment=style_transfer)")
    return metadata


def _from_export(files: list[Path]) -> Stylizer:
    from advtune.io import load_model

    transfer_file, autoencoder_file = files
    if not autoencoder_file.is_file():
        raise ConfigError(f"stylize: {transfer_file} needs its autoencoder {autoencoder_file.name} beside it "
                          "(both are written together by the run and by advtune export)")
    metadata = _export_metadata(transfer_file)
    try:
        transfer, autoencoder = load_model(transfer_file, "cpu"), load_model(autoencoder_file, "cpu")
    except ValueError as error:
        raise ConfigError(f"stylize: {str(error).splitlines()[0]}") from None
    if not isinstance(transfer, StyleTransferModule) or not isinstance(autoencoder, VQAutoencoder):
        raise ConfigError(f"stylize: {transfer_file} and {autoencoder_file.name} are not a style-transfer "
                          "module and its VQ autoencoder")
    return Stylizer(autoencoder, transfer, bool(metadata.get("quantize_output", True)),
                    metadata.get("style_short_side"))


def _from_checkpoint(path: Path, extra_prefixes: tuple[str, ...]) -> Stylizer:
    from advtune.runner import load_run
    from advtune.tasks.style_transfer import StyleTransferTask

    try:
        module, cfg = load_run(path, extra_prefixes)
    except ConfigError as error:
        hint = (" (the run's own style_transfer.pt does not need it: ckpt_path=<output_dir>)"
                if "autoencoder_path" in str(error) else "")
        raise ConfigError(f"stylize: {error}{hint}") from None
    task = module.task
    if not isinstance(task, StyleTransferTask):
        raise ConfigError(f"stylize: {path} is a checkpoint of a {type(task).__name__} run; advtune stylize "
                          "needs one of experiment=style_transfer")
    with module.generator_weights():  # the EMA, when the run kept one
        transfer = copy.deepcopy(task.transfer)
    data = cfg.get("data") or {}
    short_side = data.get("style_short_side") if hasattr(data, "get") else None
    return Stylizer(task.autoencoder, transfer, task.quantize_output, int(short_side) if short_side else None)


def load_stylizer(path: str | Path, extra_prefixes: tuple[str, ...] = ()) -> tuple[Stylizer, list[Path]]:
    """Load the model ``path`` stands for (see module docstring); return it and the files it came from."""
    files = resolve_model_files(path)
    stylizer = _from_export(files) if files[0].suffix == ".pt" else _from_checkpoint(files[0], extra_prefixes)
    return stylizer, files


def load_style_image(stylizer: Stylizer, path: Path, short_side: int | str = "auto") -> tuple[Tensor, Tensor]:
    """The style image ``(1, 3, H, W)``, resized (Lanczos, as the training data) so its short side is
    ``short_side`` (``"auto"``: the run's ``style_short_side``), and its style code ``(1, style_dim)``.

    Raises:
        ConfigError: unreadable, smaller than :data:`MIN_STYLE_SIDE`, or a flat colour (one line).
    """
    from advtune.stylize_images import read_image, resize_short_side
    from advtune.tiling import pad_to_multiple

    try:
        image = read_image(path).rgb
    except Exception as error:  # noqa: BLE001 - PIL raises many types for a broken file
        raise ConfigError(f"stylize: style image {path} cannot be read: {str(error).splitlines()[0]}") from None
    side = stylizer.style_short_side if short_side == "auto" else int(short_side)
    if side:
        image = resize_short_side(image, side)
    if min(image.shape[-2:]) < MIN_STYLE_SIDE:
        raise ConfigError(f"stylize: style image {path} is {image.shape[-1]}×{image.shape[-2]} pixels; it needs "
                          f"at least {MIN_STYLE_SIDE} on each side (or give style_size=)")
    if float(image.flatten(2).std(dim=2).max()) < _FLAT_STYLE_STD:  # per channel, over the pixels
        raise ConfigError(f"stylize: style image {path} is a flat colour: it has no texture or colour "
                          "variation to transfer")
    image = pad_to_multiple(image, stylizer.downsampling_factor)
    return image, stylizer.style_code(image.to(stylizer.transfer.last_layer.device))
