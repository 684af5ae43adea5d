"""Latent adversarial LoRA fine-tuning of a Flux transformer: the generator side.

Per batch of clean latents ``x0`` (:mod:`advtune.data.latents`): draw ``t`` and ``ε``, form
``x_t = (1 − t)·x0 + t·ε``, predict ``v̂`` with the adapted transformer, and return

* ``base_losses = {"diffusion": w · MSE(v̂, ε − x0)}`` — Flux's flow-matching loss (``w`` =
  ``diffusion_loss_weight``, fixed; the phase schedule anneals the base sum on top);
* ``real = x0`` and ``fake = x̂0 = x_t − t·v̂`` (one-step estimate, still on the generator's graph),
  both ``(B, C, H, W)`` latents — no VAE decode;
* ``cond = {"sigma": σ}``, the level the discriminator re-noises both to (logit-normal shifted to
  high noise, as LADD), plus the batch's prompt embeddings when it has them.

Adapters (peft LoRA or LyCORIS) sit on a frozen base; only they train, in float32, over a float32,
bfloat16 or 8-bit base. The base, sampling, validation and export are shared with the distillation
task (:mod:`.flux_adapter`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from advtune.tasks.base import TaskOutput
from advtune.tasks.flow_matching import interpolate, one_step_estimate, sample_timesteps, sampler_levels
from advtune.tasks.flux_adapter import FluxAdapterTask, is_sharded
from advtune.tasks.flux_arguments import check_flux_task_arguments

__all__ = ["FluxLoRATask"]


class FluxLoRATask(FluxAdapterTask):
    """Flow-matching LoRA / LyCORIS fine-tuning of a ``FluxTransformer2DModel`` with a latent adversary.

    Args:
        transformer: a ready ``FluxTransformer2DModel`` (Python use); else one of the next three.
        snapshot: FLUX.1 snapshot root (the root key ``pretrained``): ``transformer/`` is the base,
            ``vae/`` decodes validation samples, ``scheduler/`` gives the sampling shift.
        pretrained_path: local transformer directory to ``from_pretrained`` (a saved tiny base).
        pretrained_subfolder: sub-directory of ``pretrained_path`` holding it.
        transformer_config: kwargs of :func:`advtune.models.flux.build_flux_transformer` (tiny default).
        base_dtype, quantize, gradient_checkpointing: the base (:func:`advtune.models.flux_base.load_flux_base`).
        adapter_type: ``lora`` (peft), ``lycoris_lora`` / ``lokr`` / ``loha`` (LyCORIS), ``none`` (full
            fine-tuning, e.g. to train the tiny base; the feature discriminator then cannot be used).
        rank, alpha, dropout, target_modules, lokr_factor: adapter settings (:func:`advtune.adapters.add_adapter`).
        latent_channels: channels of the latents (``None``: from the transformer, 16 for FLUX.1).
        latent_size: side of the latents :meth:`sample` draws without a snapshot (digits: 8).
        codec: latent codec with ``decode`` (default: the snapshot's VAE, else identity for digits).
        timestep_sampling, logit_mean, logit_std, mode_scale, timestep_shift: training levels ``t``
            (:func:`advtune.tasks.flow_matching.sample_timesteps`).
        diffusion_loss_weight: fixed weight ``w`` of the flow-matching MSE.
        disc_sigma_logit_mean, disc_sigma_logit_std: logit-normal of the discriminator's re-noising level.
        adv_fake_steps: make the adversarial fake at the levels the Euler samplers of these step counts
            visit, with the sampling shift of the batch's size (:func:`~advtune.tasks.flow_matching.sampler_levels`;
            ``[2]``: ``[1.0, 0.5]`` at shift 1, ``[1.0, 0.652]`` for FLUX.1-dev at 512 px). Each sample
            draws one, and a second forward gives the fake ``x̂0`` from ``x0`` noised to it, so the
            adversarial term trains the levels few-step sampling uses (ADD, Sauer et al. 2023).
            ``None`` (and no ``adv_fake_levels``): the fake is ``x̂0`` at the flow-matching ``t`` of the same forward.
        adv_fake_levels: the same with levels ``t`` given as they are (no shift applied), e.g. ``[1.0]``.
        guidance_scale: embedded guidance while training (guidance-distilled transformers only; FLUX.1-dev: 1.0).
        validation_guidance_scale: embedded guidance of validation grids and :meth:`sample` (``None``:
            ``guidance_scale``; FLUX.1-dev is sampled at 3.5).
        validation_num_steps: Euler step counts rendered (and scored, digits) at validation.
        num_validation_samples: digits samples per step count (and size of the real reference set).
        validation_batch_size: samples per transformer call when sampling (memory, not results).
        validation_resolution: pixel side of validation prompt images (snapshot; default 512).
        sample_shift: time shift of the sampling schedule (``None``: the snapshot scheduler's, else 1).
        digits_metric: log the digits Fréchet distance (``val/fd_{n}step``) for 1-channel outputs.
        seed: seed of validation noise, so every validation renders the same starting noise.
        checkpoint_base_weights: keep the frozen base in ``state_dict`` (off: adapters only).
    """

    def __init__(
        self,
        transformer: nn.Module | None = None,
        snapshot: str | None = None,
        pretrained_path: str | None = None,
        pretrained_subfolder: str | None = None,
        transformer_config: dict[str, Any] | None = None,
        base_dtype: str | None = None,
        quantize: str | None = None,
        gradient_checkpointing: bool = False,
        adapter_type: str = "lora",
        rank: int = 4,
        alpha: float = 4.0,
        dropout: float = 0.0,
        target_modules: Sequence[str] | None = None,
        lokr_factor: int = -1,
        latent_channels: int | None = None,
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
        adv_fake_steps: Sequence[int] | None = None,
        adv_fake_levels: Sequence[float] | None = None,
        guidance_scale: float = 1.0,
        validation_guidance_scale: float | None = None,
        validation_num_steps: Sequence[int] = (1, 2, 4, 8),
        num_validation_samples: int = 256,
        validation_batch_size: int = 64,
        validation_resolution: int | None = None,
        sample_shift: float | None = None,
        digits_metric: bool = True,
        seed: int = 0,
        checkpoint_base_weights: bool = False,
    ) -> None:
        check_flux_task_arguments(locals())  # one line naming the task.* key of a value that makes no sense
        super().__init__(
            transformer=transformer, snapshot=snapshot, pretrained_path=pretrained_path,
            pretrained_subfolder=pretrained_subfolder, transformer_config=transformer_config, base_dtype=base_dtype,
            quantize=quantize, gradient_checkpointing=gradient_checkpointing, adapter_type=adapter_type, rank=rank,
            alpha=alpha, dropout=dropout, target_modules=target_modules, lokr_factor=lokr_factor,
            latent_channels=latent_channels, latent_size=latent_size, codec=codec,
            timestep_args=dict(scheme=timestep_sampling, logit_mean=float(logit_mean), logit_std=float(logit_std),
                               mode_scale=float(mode_scale), shift=float(timestep_shift)),
            guidance_scale=guidance_scale, validation_guidance_scale=validation_guidance_scale,
            validation_num_steps=validation_num_steps, num_validation_samples=num_validation_samples,
            validation_batch_size=validation_batch_size, validation_resolution=validation_resolution,
            sample_shift=sample_shift, digits_metric=digits_metric, seed=seed,
            checkpoint_base_weights=checkpoint_base_weights)
        self.diffusion_loss_weight = float(diffusion_loss_weight)
        self.disc_sigma = (float(disc_sigma_logit_mean), float(disc_sigma_logit_std))
        if adv_fake_steps is not None and adv_fake_levels is not None:
            raise ValueError("FluxLoRATask: set adv_fake_steps (step counts) or adv_fake_levels (levels), not both")
        if adv_fake_levels is not None and not all(0.0 < float(level) <= 1.0 for level in adv_fake_levels):
            raise ValueError(f"FluxLoRATask: adv_fake_levels must lie in (0, 1], got {list(adv_fake_levels)}")
        if adv_fake_steps is not None and (not adv_fake_steps or not all(int(n) >= 1 for n in adv_fake_steps)):
            raise ValueError(f"FluxLoRATask: adv_fake_steps must be step counts >= 1, got {list(adv_fake_steps)}")
        self.adv_fake_levels = None if adv_fake_levels is None else [float(level) for level in adv_fake_levels]
        self.adv_fake_steps = None if adv_fake_steps is None else sorted({int(n) for n in adv_fake_steps})

    def fake_levels(self, latent_height: int, latent_width: int) -> list[float] | None:
        """Levels the adversarial fake is made at for latents of this size (``None``: the flow-matching ``t``)."""
        if self.adv_fake_steps is None:
            return self.adv_fake_levels
        shift = self._shift(latent_height, latent_width)
        return sorted({level for n in self.adv_fake_steps for level in sampler_levels(n, shift)}, reverse=True)

    # ---- the generator ---------------------------------------------------------------------
    def fsdp_units(self) -> tuple[str, list[nn.Module]]:
        """What ``trainer.strategy=fsdp`` shards (the distillation task is not sharded: its teacher
        cache is built by every rank alone): this attribute, one unit per transformer block."""
        return "transformer", [*self.transformer.transformer_blocks, *self.transformer.single_transformer_blocks]

    def generator_predict(self, batch: Any) -> TaskOutput:
        from advtune.discriminators.latent import sample_renoise_sigma
        from advtune.models.flux_base import output_layer_weight

        x0 = self._latents(batch)
        batch_size, device = x0.shape[0], x0.device
        t = sample_timesteps(batch_size, device=device, **self.timestep_args)
        noise = torch.randn_like(x0)
        x_t = interpolate(x0, noise, t)
        prompt = self._prompt(batch, batch_size, device)
        velocity = self._velocity(x_t, t, prompt)
        mse = F.mse_loss(velocity, noise - x0)
        cond: dict[str, Any] = {"sigma": sample_renoise_sigma(batch_size, *self.disc_sigma, device=device)}
        if "prompt_embeds" in batch:
            cond.update(prompt_embeds=prompt[0], pooled_prompt_embeds=prompt[1])
        fake = one_step_estimate(x_t, velocity, t)
        fake_levels = self.fake_levels(*x0.shape[2:])
        if fake_levels is not None:
            levels = torch.tensor(fake_levels, device=device)
            t_fake = levels[torch.randint(len(levels), (batch_size,), device=device)]
            x_fake = interpolate(x0, torch.randn_like(x0), t_fake)
            fake = one_step_estimate(x_fake, self._velocity(x_fake, t_fake, prompt), t_fake)
        return TaskOutput(
            real=x0,
            fake=fake,
            base_losses={"diffusion": self.diffusion_loss_weight * mse},
            cond=cond,
            last_layer=None if is_sharded(self.transformer) else output_layer_weight(self.transformer, self.lycoris),
            logs={"g/diffusion_mse": mse.detach(), "g/timestep_mean": t.mean().detach()},
        )
