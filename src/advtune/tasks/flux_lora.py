"""Latent adversarial LoRA fine-tuning of a Flux transformer: the generator side.

Per batch of clean latents ``x0`` (:mod:`advtune.data.latents`): draw ``t`` and ``ε``, form
``x_t = (1 − t)·x0 + t·ε``, predict ``v̂`` with the adapted transformer, and return

* ``base_losses = {"diffusion": w · MSE(v̂, ε − x0)}`` — Flux's flow-matching loss (``w`` =
  ``diffusion_loss_weight``, fixed; the phase schedule anneals the base sum on top);
* ``real = x0`` and ``fake = x̂0 = x_t − t·v̂`` (one-step estimate, still on the generator's graph),
  both ``(B, C, H, W)`` latents — no VAE decode;
* ``cond = {"sigma": σ}``, the level the discriminator re-noises both to (logit-normal shifted to
  high noise, as LADD), plus the batch's prompt embeddings when it has them.

Adapters (peft LoRA or LyCORIS) sit on a frozen base; only they train. Checkpoints leave the frozen
base out (it is rebuilt from its config or reloaded from its directory), see ``checkpoint_base_weights``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from advtune.tasks.base import AdversarialTask, TaskOutput
from advtune.tasks.flow_matching import euler_sample, interpolate, one_step_estimate, sample_timesteps

__all__ = ["FluxLoRATask"]


# Checkpoints hold the adapters, not the frozen base: it is rebuilt from its seeded config or
# reloaded from its directory, and a FLUX.1 base (12 B parameters) has no place in every checkpoint.
def _drop_frozen_base(task: "FluxLoRATask", state_dict: dict, prefix: str, _metadata: Any) -> None:
    for name in task._frozen_base:
        state_dict.pop(f"{prefix}transformer.{name}", None)


def _allow_missing_base(task: "FluxLoRATask", incompatible: Any) -> None:
    suffixes = tuple("transformer." + name for name in task._frozen_base)
    if suffixes:
        incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if not k.endswith(suffixes)]


class FluxLoRATask(AdversarialTask):
    """Flow-matching LoRA / LyCORIS fine-tuning of a ``FluxTransformer2DModel`` with a latent adversary.

    Args:
        transformer: a ready ``FluxTransformer2DModel`` (Python use); else see the next two.
        pretrained_path: local directory to ``from_pretrained`` (a real FLUX.1 or a saved tiny base).
        pretrained_subfolder: e.g. ``"transformer"`` for a full FLUX.1 pipeline snapshot.
        transformer_config: kwargs of :func:`advtune.models.flux.build_flux_transformer` (tiny default).
        adapter_type: ``lora`` (peft), ``lycoris_lora`` / ``lokr`` / ``loha`` (LyCORIS), ``none`` (full
            fine-tuning, e.g. to train the tiny base; the feature discriminator then cannot be used).
        rank, alpha, dropout, target_modules, lokr_factor: adapter settings (:func:`advtune.adapters.add_adapter`).
        latent_channels, latent_size: shape ``(C, S, S)`` of the latents, checked against the
            transformer at construction and used by :meth:`sample`.
        codec: latent codec with ``decode`` (default identity: pixel-space digits).
        timestep_sampling, logit_mean, logit_std, mode_scale, timestep_shift: training levels ``t``
            (:func:`advtune.tasks.flow_matching.sample_timesteps`).
        diffusion_loss_weight: fixed weight ``w`` of the flow-matching MSE.
        disc_sigma_logit_mean, disc_sigma_logit_std: logit-normal of the discriminator's re-noising level.
        guidance_scale: embedded guidance (guidance-distilled transformers only).
        validation_num_steps: Euler step counts sampled and scored at validation.
        num_validation_samples: samples per step count (and size of the real reference set).
        sample_shift: time shift of the sampling schedule.
        digits_metric: log the digits Fréchet distance (``val/fd_{n}step``) for 1-channel outputs.
        seed: seed of validation noise, so every validation scores the same starting noise.
        checkpoint_base_weights: keep the frozen base in ``state_dict`` (off: adapters only).
    """

    def __init__(
        self,
        transformer: nn.Module | None = None,
        pretrained_path: str | None = None,
        pretrained_subfolder: str | None = None,
        transformer_config: dict[str, Any] | None = None,
        adapter_type: str = "lora",
        rank: int = 4,
        alpha: float = 4.0,
        dropout: float = 0.0,
        target_modules: Sequence[str] | None = None,
        lokr_factor: int = -1,
        latent_channels: int = 1,
        latent_size: int = 8,
        codec: Any | None = None,
        timestep_sampling: str = "logit_normal",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        mode_scale: float = 1.29,
        timestep_shift: float = 1.0,
        diffusion_loss_weight: float = 1.0,
        disc_sigma_logit_mean: float = 1.0,
        disc_sigma_logit_std: float = 1.0,
        guidance_scale: float = 1.0,
        validation_num_steps: Sequence[int] = (1, 2, 4, 8),
        num_validation_samples: int = 256,
        sample_shift: float = 1.0,
        digits_metric: bool = True,
        seed: int = 0,
        checkpoint_base_weights: bool = False,
    ) -> None:
        super().__init__()
        from advtune.adapters import add_adapter
        from advtune.data.latents import IdentityCodec
        from advtune.models.flux import build_flux_transformer, load_flux_transformer, validate_latents

        if transformer is not None and pretrained_path is not None:
            raise ValueError("FluxLoRATask: pass either transformer or pretrained_path, not both")
        if pretrained_path is not None:
            transformer = load_flux_transformer(pretrained_path, pretrained_subfolder)
        elif transformer is None:
            transformer = build_flux_transformer(**dict(transformer_config or {}))
        validate_latents(transformer, torch.zeros(1, latent_channels, latent_size, latent_size),
                         where=f"FluxLoRATask latents (latent_channels={latent_channels}, latent_size={latent_size})")
        sample_timesteps(1, timestep_sampling, logit_mean, logit_std, mode_scale, timestep_shift)  # validates
        self.transformer = transformer
        self.adapter_type = adapter_type
        network = add_adapter(transformer, adapter_type, rank, alpha, dropout, target_modules, lokr_factor)
        self.lycoris = network  # registered sub-module (or None): its weights train and checkpoint
        self.codec = codec if codec is not None else IdentityCodec()
        self.latent_shape = (int(latent_channels), int(latent_size), int(latent_size))
        self.timestep_args = dict(scheme=timestep_sampling, logit_mean=float(logit_mean), logit_std=float(logit_std),
                                  mode_scale=float(mode_scale), shift=float(timestep_shift))
        self.diffusion_loss_weight = float(diffusion_loss_weight)
        self.disc_sigma = (float(disc_sigma_logit_mean), float(disc_sigma_logit_std))
        self.guidance_scale = float(guidance_scale)
        self.validation_num_steps = [int(n) for n in validation_num_steps]
        self.num_validation_samples = int(num_validation_samples)
        self.sample_shift = float(sample_shift)
        self.digits_metric = bool(digits_metric)
        self.seed = int(seed)
        # Fixed once: the module toggles requires_grad per phase, the trainable set must not follow it.
        self._trainable = [p for p in self.parameters() if p.requires_grad]
        self._references: list[torch.Tensor] = []
        self._validation_prompt: tuple[torch.Tensor, torch.Tensor] | None = None
        self._frozen_base = set() if checkpoint_base_weights else {
            name for name, p in transformer.named_parameters() if not p.requires_grad}
        self.register_state_dict_post_hook(_drop_frozen_base)
        self.register_load_state_dict_post_hook(_allow_missing_base)

    # ---- the generator ---------------------------------------------------------------------
    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """Adapter parameters (all transformer parameters with ``adapter_type="none"``)."""
        return list(self._trainable)

    def discriminator_kwargs(self) -> dict[str, Any]:
        """Completes ``discriminator/flux_features`` (``_partial_``) with the shared transformer."""
        return {"transformer": self.transformer}

    def _prompt(self, batch: dict, batch_size: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        from advtune.models.flux import null_prompt

        if "prompt_embeds" in batch:
            return batch["prompt_embeds"].to(device, dtype), batch["pooled_prompt_embeds"].to(device, dtype)
        return null_prompt(self.transformer, batch_size, 1, device, dtype)

    def _velocity(self, x_t: torch.Tensor, t: torch.Tensor, prompt: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        from advtune.models.flux import predict_velocity

        return predict_velocity(self.transformer, x_t, t, prompt[0], prompt[1], self.guidance_scale)

    def _latents(self, batch: Any) -> torch.Tensor:
        from advtune.models.flux import validate_latents

        if not isinstance(batch, dict) or "latents" not in batch:
            raise ValueError("FluxLoRATask expects dict batches with a 'latents' (B, C, H, W) entry")
        latents = batch["latents"]
        validate_latents(self.transformer, latents, where="batch['latents']")
        return latents

    def generator_predict(self, batch: Any) -> TaskOutput:
        from advtune.discriminators.latent import sample_renoise_sigma

        x0 = self._latents(batch)
        batch_size, device = x0.shape[0], x0.device
        t = sample_timesteps(batch_size, device=device, **self.timestep_args)
        noise = torch.randn_like(x0)
        x_t = interpolate(x0, noise, t)
        prompt = self._prompt(batch, batch_size, device, x0.dtype)
        velocity = self._velocity(x_t, t, prompt)
        mse = F.mse_loss(velocity.float(), (noise - x0).float())
        cond: dict[str, Any] = {"sigma": sample_renoise_sigma(batch_size, *self.disc_sigma, device=device)}
        if "prompt_embeds" in batch:
            cond.update(prompt_embeds=prompt[0], pooled_prompt_embeds=prompt[1])
        trainable = [p for p in self._trainable if p.ndim >= 2]
        return TaskOutput(
            real=x0,
            fake=one_step_estimate(x_t, velocity, t),
            base_losses={"diffusion": self.diffusion_loss_weight * mse},
            cond=cond,
            last_layer=trainable[-1] if trainable else None,
            logs={"g/diffusion_mse": mse.detach(), "g/timestep_mean": t.mean().detach()},
        )

    # ---- sampling, validation, export --------------------------------------------------------
    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None,
               num_steps: int | None = None) -> torch.Tensor:
        """Decoded samples ``(N, C, H, W)`` in [-1, 1] after ``num_steps`` Euler steps (default: the most validated)."""
        steps = int(num_steps or max(self.validation_num_steps))
        weight = next(self.transformer.parameters())  # sample in the base's dtype (bf16 bases too)
        device = weight.device
        noise = torch.randn(num_samples, *self.latent_shape, generator=generator).to(device, weight.dtype)
        prompt = self._validation_prompt
        if prompt is not None:
            prompt = tuple(p.expand(num_samples, *p.shape[1:]).to(device, weight.dtype) for p in prompt)
        else:
            prompt = self._prompt({}, num_samples, device, noise.dtype)
        latents = euler_sample(lambda x, t: self._velocity(x, t, prompt), noise, steps, self.sample_shift)
        return self.codec.decode(latents).float()

    @torch.no_grad()
    def validation_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """Keeps real images for the Fréchet reference; returns ``val/diffusion_mse`` at fixed noise."""
        x0 = self._latents(batch)
        if "prompt_embeds" in batch and self._validation_prompt is None:
            self._validation_prompt = (batch["prompt_embeds"][:1].cpu(), batch["pooled_prompt_embeds"][:1].cpu())
        kept = sum(len(r) for r in self._references)
        if kept < self.num_validation_samples:
            self._references.append(self.codec.decode(x0[: self.num_validation_samples - kept]).cpu())
        generator = torch.Generator().manual_seed(self.seed)
        t = sample_timesteps(x0.shape[0], generator=generator, **self.timestep_args).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        velocity = self._velocity(interpolate(x0, noise, t), t, self._prompt(batch, x0.shape[0], x0.device, x0.dtype))
        return {"val/diffusion_mse": F.mse_loss(velocity.float(), (noise - x0).float())}

    @torch.no_grad()
    def validation_epoch_end(self, output_dir: Path | None, step: int) -> dict[str, float]:
        """Samples at each step count from the same noise: ``val/fd_{n}step`` (digits FID) and one PNG
        of labelled grids side by side, ``output_dir/euler_steps_{step}.png``."""
        references = torch.cat(self._references) if self._references else None
        self._references = []
        metric = None
        if self.digits_metric and references is not None and references.shape[1] == 1:
            from advtune.metrics.digits_classifier import DigitsFrechetDistance

            metric = DigitsFrechetDistance()
            reference_stats = metric.reference_statistics(references)
        results: dict[str, float] = {}
        panels: dict[str, torch.Tensor] = {}
        for steps in self.validation_num_steps:
            generator = torch.Generator().manual_seed(self.seed)  # same noise for every step count
            images = self.sample(self.num_validation_samples, generator=generator, num_steps=steps)
            if metric is not None:
                results[f"val/fd_{steps}step"] = float(metric(images, reference_stats))
            panels[f"{steps} step{'s' if steps > 1 else ''}"] = images[:64]
        if output_dir is not None:
            from advtune.visualize import save_side_by_side

            save_side_by_side(panels, Path(output_dir) / f"euler_steps_{step:07d}.png")
        return results

    def export(self, directory: str | Path) -> Path:
        """The adapter as ``pytorch_lora_weights.safetensors`` (diffusers format; LyCORIS: its own
        format); with ``adapter_type="none"`` the whole transformer via ``save_pretrained``."""
        from advtune.adapters import export_lora

        if self.adapter_type == "none":
            self.transformer.save_pretrained(str(directory))
            return Path(directory) / "diffusion_pytorch_model.safetensors"
        return export_lora(self.transformer, directory)
