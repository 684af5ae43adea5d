"""What every Flux adapter task shares: the frozen base with adapters, sampling, validation, export.

:class:`FluxAdapterTask` holds a ``FluxTransformer2DModel`` (a FLUX.1 snapshot's ``transformer/``, a
saved transformer directory, or one built from a config; :mod:`advtune.models.flux_base`) with peft
LoRA or LyCORIS adapters that train in float32, the latent codec (the snapshot's VAE, else identity
for digits) and the sampling schedule (FluxPipeline's shift). Subclasses say what one training batch
does: flow matching with a latent adversary (:mod:`.flux_lora`) or few-step distillation
(:mod:`.flux_distill`). Checkpoints leave the frozen base out (it is rebuilt from its config or
reloaded from its directory), see ``checkpoint_base_weights``. Validation renders the data's
validation prompts or scores digits (:mod:`.flux_validation`) at ``validation_guidance_scale``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from advtune.tasks.base import AdversarialTask
from advtune.tasks.flow_matching import euler_sample, interpolate, sample_timesteps
from advtune.tasks.flux_validation import digits_validation, flux_schedule_shift, render_prompt_grid

__all__ = ["FluxAdapterTask", "is_sharded"]


# Checkpoints hold the adapters, not the frozen base: it is rebuilt from its seeded config or
# reloaded from its directory, and a FLUX.1 base (12 B parameters) has no place in every checkpoint.
def _drop_frozen_base(task: "FluxAdapterTask", state_dict: dict, prefix: str, _metadata: Any) -> None:
    for name in task._frozen_base:
        state_dict.pop(f"{prefix}transformer.{name}", None)


def _allow_missing_base(task: "FluxAdapterTask", incompatible: Any) -> None:
    suffixes = tuple("transformer." + name for name in task._frozen_base)
    if suffixes:
        incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if not k.endswith(suffixes)]


def is_sharded(module: nn.Module) -> bool:
    """Whether FSDP wraps ``module`` (the graph then holds views FSDP gathers, not the parameters)."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    return isinstance(module, FullyShardedDataParallel)


class FluxAdapterTask(AdversarialTask):
    """The frozen Flux base with trainable adapters; see :class:`~advtune.tasks.flux_lora.FluxLoRATask`
    for every argument. ``timestep_args`` are those of :func:`~advtune.tasks.flow_matching.sample_timesteps`
    (validated here, before the adapters are drawn, and used by ``val/diffusion_mse``);
    ``validation_guidance_scale`` (``None``: ``guidance_scale``) is the embedded guidance :meth:`sample`
    renders at. Subclasses implement ``generator_predict`` and may override :meth:`_add_adapters`."""

    export_subdir = "lora"  # periodic exports go to output_dir/lora/stepNNNNNN/

    def __init__(self, *, transformer: nn.Module | None, snapshot: str | None, pretrained_path: str | None,
                 pretrained_subfolder: str | None, transformer_config: dict[str, Any] | None, base_dtype: str | None,
                 quantize: str | None, gradient_checkpointing: bool, adapter_type: str, rank: int, alpha: float,
                 dropout: float, target_modules: Sequence[str] | None, lokr_factor: int, latent_channels: int | None,
                 latent_size: int, codec: Any | None, timestep_args: dict[str, Any], guidance_scale: float,
                 validation_guidance_scale: float | None, validation_num_steps: Sequence[int],
                 num_validation_samples: int, validation_batch_size: int, validation_resolution: int | None,
                 sample_shift: float | None, digits_metric: bool, seed: int, checkpoint_base_weights: bool) -> None:
        super().__init__()
        from advtune.data.latents import AutoencoderKLCodec, IdentityCodec
        from advtune.models.flux import validate_latents
        from advtune.models.flux_base import load_flux_base

        name = type(self).__name__
        if transformer is not None and (pretrained_path is not None or snapshot is not None):
            raise ValueError(f"{name}: pass either transformer or pretrained_path/snapshot, not both")
        if quantize is not None and adapter_type == "none":
            raise ValueError(f"{name}: task.quantize freezes the base in 8 bits; full fine-tuning "
                             "(adapter_type=none) cannot train it, use an adapter or quantize=null")
        if transformer is None:
            transformer = load_flux_base(snapshot, pretrained_path, pretrained_subfolder, transformer_config,
                                         base_dtype, quantize, gradient_checkpointing)
        latent_channels = int(latent_channels or transformer.config.in_channels // 4)
        self.scheduler_config: dict[str, Any] = {}
        if snapshot is not None:
            root = Path(snapshot).expanduser()
            codec = codec or AutoencoderKLCodec(root, "vae", dtype=str(transformer.dtype).split(".")[-1])
            scheduler_file = root / "scheduler" / "scheduler_config.json"
            self.scheduler_config = json.loads(scheduler_file.read_text()) if scheduler_file.is_file() else {}
            latent_size = int(validation_resolution or 512) // codec.downsample_factor
        validate_latents(transformer, torch.zeros(1, latent_channels, latent_size, latent_size),
                         where=f"{name} latents (latent_channels={latent_channels}, latent_size={latent_size})")
        sample_timesteps(1, **timestep_args)  # validates (and draws once: the adapters' init follows it)
        self.transformer = transformer
        self.adapter_type = adapter_type
        self.lycoris = self._add_adapters(transformer, adapter_type, rank, alpha, dropout, target_modules, lokr_factor)
        self.codec = codec if codec is not None else IdentityCodec()
        self.latent_shape = (latent_channels, int(latent_size), int(latent_size))
        self.timestep_args = dict(timestep_args)
        self.guidance_scale = float(guidance_scale)
        self.validation_guidance_scale = float(guidance_scale if validation_guidance_scale is None
                                               else validation_guidance_scale)
        self.validation_num_steps = [int(n) for n in validation_num_steps]
        self.num_validation_samples = int(num_validation_samples)
        self.validation_batch_size = int(validation_batch_size)
        self.sample_shift = None if sample_shift is None else float(sample_shift)
        self.digits_metric = bool(digits_metric)
        self.seed = int(seed)
        # Fixed once: the module toggles requires_grad per phase, the trainable set must not follow it.
        self._trainable = [p for p in self.parameters() if p.requires_grad]
        for param in self._trainable:  # adapters train in float32 over any base dtype
            param.data = param.data.float()
        self._references: list[torch.Tensor] = []
        self._prompts: tuple[list[str], torch.Tensor, torch.Tensor] | None = None
        self.validation_images: dict[str, torch.Tensor] = {}
        self._frozen_base = set() if checkpoint_base_weights else {
            name for name, p in transformer.named_parameters() if not p.requires_grad}
        self.register_state_dict_post_hook(_drop_frozen_base)
        self.register_load_state_dict_post_hook(_allow_missing_base)

    def _add_adapters(self, transformer: nn.Module, adapter_type: str, rank: int, alpha: float, dropout: float,
                      target_modules: Sequence[str] | None, lokr_factor: int) -> nn.Module | None:
        """Add the trainable adapters (:func:`advtune.adapters.add_adapter`); return a LyCORIS network or ``None``."""
        from advtune.adapters import add_adapter

        return add_adapter(transformer, adapter_type, rank, alpha, dropout, target_modules, lokr_factor)

    # ---- the generator ---------------------------------------------------------------------
    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """Adapter parameters (all transformer parameters with ``adapter_type="none"``)."""
        return list(self._trainable)

    def discriminator_kwargs(self) -> dict[str, Any]:
        """Completes ``discriminator/flux_features`` (``_partial_``) with the shared transformer."""
        return {"transformer": self.transformer}

    def _prompt(self, batch: dict, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        from advtune.models.flux import null_prompt

        if "prompt_embeds" in batch:
            return batch["prompt_embeds"].to(device, torch.float32), batch["pooled_prompt_embeds"].to(device, torch.float32)
        return null_prompt(self.transformer, batch_size, 1, device)

    def _velocity(self, x_t: torch.Tensor, t: torch.Tensor, prompt: tuple[torch.Tensor, torch.Tensor],
                  guidance: float | None = None) -> torch.Tensor:
        """``v̂`` of the transformer as it is now (adapters on), at ``guidance`` (default: the training one)."""
        from advtune.models.flux import predict_velocity

        scale = self.guidance_scale if guidance is None else guidance
        return predict_velocity(self.transformer, x_t, t, prompt[0], prompt[1], scale)

    def _latents(self, batch: Any, key: str = "latents") -> torch.Tensor:
        from advtune.models.flux import validate_latents

        if not isinstance(batch, dict) or key not in batch:
            raise ValueError(f"{type(self).__name__} expects dict batches with a '{key}' (B, C, H, W) entry")
        latents = batch[key]
        validate_latents(self.transformer, latents, where=f"batch['{key}']")
        return latents.float()

    def _shift(self, latent_height: int, latent_width: int) -> float:
        """The sampling schedule's time shift for latents of this size (FluxPipeline's, or ``sample_shift``)."""
        if self.sample_shift is not None:
            return self.sample_shift
        return flux_schedule_shift(self.scheduler_config, (latent_height // 2) * (latent_width // 2))

    # ---- sampling, validation, export --------------------------------------------------------
    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None, num_steps: int | None = None,
               prompt_index: int = 0) -> torch.Tensor:
        """Decoded samples ``(N, C, H, W)`` in [-1, 1] after ``num_steps`` Euler steps (default: the most
        validated) at ``validation_guidance_scale``, conditioned on validation prompt ``prompt_index``
        when the data gave prompts."""
        steps = int(num_steps or max(self.validation_num_steps))
        return self._euler_images(num_samples, generator, steps, prompt_index, self.validation_guidance_scale)

    def _euler_images(self, num_samples: int, generator: torch.Generator | None, steps: int, prompt_index: int,
                      guidance: float) -> torch.Tensor:
        device = self.transformer.x_embedder.weight.device
        noise = torch.randn(num_samples, *self.latent_shape, generator=generator).to(device)
        shift = self._shift(*self.latent_shape[1:])
        images = []
        for chunk in noise.split(self.validation_batch_size):
            if self._prompts is not None:
                prompt = tuple(p[prompt_index:prompt_index + 1].expand(len(chunk), *p.shape[1:]).to(device, torch.float32)
                               for p in self._prompts[1:])
            else:
                prompt = self._prompt({}, len(chunk), device)
            latents = euler_sample(lambda x, t: self._velocity(x, t, prompt, guidance), chunk, steps, shift)
            images.append(self.codec.decode(latents).float().cpu())
        return torch.cat(images)

    @torch.no_grad()
    def validation_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """Keeps the validation prompts, or real images for the digits reference; returns
        ``val/diffusion_mse`` at fixed noise."""
        if "validation_prompts" in batch:  # the data module's prompt batch (cached embeddings)
            self._prompts = (list(batch["validation_prompts"]), batch["validation_prompt_embeds"].cpu(),
                             batch["validation_pooled_prompt_embeds"].cpu())
            return {}
        x0 = self._latents(batch)
        kept = sum(len(r) for r in self._references)
        if self.digits_metric and x0.shape[1] == 1 and kept < self.num_validation_samples:
            self._references.append(self.codec.decode(x0[: self.num_validation_samples - kept]).cpu())
        generator = torch.Generator().manual_seed(self.seed)
        t = sample_timesteps(x0.shape[0], generator=generator, **self.timestep_args).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        velocity = self._velocity(interpolate(x0, noise, t), t, self._prompt(batch, x0.shape[0], x0.device))
        return {"val/diffusion_mse": F.mse_loss(velocity, noise - x0)}

    @torch.no_grad()
    def validation_epoch_end(self, output_dir: Path | None, step: int) -> dict[str, float]:
        """Validation prompts: ``output_dir/prompts_{step}.png`` (prompt × step count) and
        ``validation_images``. Else digits: ``val/fd_{n}step`` and ``output_dir/euler_steps_{step}.png``."""
        references = torch.cat(self._references) if self._references else None
        self._references = []
        with torch.random.fork_rng(devices=[]):  # building metrics draws from the global RNG: keep training's
            return self._render(output_dir, step, references)

    def _columns(self) -> dict[str, Callable[..., torch.Tensor]]:
        """Validation columns: label → ``sample(num, generator, prompt_index)`` (one per step count)."""
        return {f"{n} step{'s' if n > 1 else ''}": (lambda num, gen, i=0, n=n: self.sample(num, gen, n, prompt_index=i))
                for n in self.validation_num_steps}

    def _render(self, output_dir: Path | None, step: int, references: torch.Tensor | None) -> dict[str, float]:
        if self._prompts is not None:
            out = Path(output_dir) / f"prompts_{step:07d}.png" if output_dir is not None else None
            grid = render_prompt_grid(self._columns(), self._prompts[0], self.seed, out)
            self.validation_images = {"validation/prompts_x_steps": grid}
            return {}
        out = Path(output_dir) / f"euler_steps_{step:07d}.png" if output_dir is not None else None
        return digits_validation(self._columns(), references, self.num_validation_samples, self.seed, out)

    def export(self, directory: str | Path) -> Path:
        """The adapter as ``pytorch_lora_weights.safetensors`` (diffusers format; LyCORIS: its own
        format); with ``adapter_type="none"`` the whole transformer via ``save_pretrained``."""
        from advtune.adapters import export_lora

        if self.adapter_type == "none":
            self.transformer.save_pretrained(str(directory))
            return Path(directory) / "diffusion_pytorch_model.safetensors"
        return export_lora(self.transformer, directory, metadata=self.export_metadata())

    def export_metadata(self) -> dict[str, str] | None:
        """Extra safetensors header entries of the exported adapter (``None``: none)."""
        return None
