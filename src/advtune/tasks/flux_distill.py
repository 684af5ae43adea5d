"""Few-step distillation of a Flux teacher into a LoRA student: the generator side.

Latent adversarial diffusion distillation (LADD, Sauer et al. 2024, how FLUX.1-schnell was made)
on the one frozen base: the teacher is the base with the adapters off, or the base with a frozen
teacher LoRA (:mod:`.flux_teacher`); the student is a LoRA trained to do in ``k`` Euler steps what
the teacher does in ``teacher_steps``. Batches come from the teacher-sample cache
(:mod:`advtune.data.teacher_samples`): ``x0`` = a teacher sample ``(B, C, H, W)`` and ``ε`` = the
noise it was sampled from. Per batch:

* ``t`` = one of the levels the student's own ``k``-step samplers visit (``student_steps``, with the
  sampling shift at this latent size: :func:`~advtune.tasks.flow_matching.sampler_levels`), the
  distinct levels equally likely (``rollout``: each position ``(k, i)`` of the samplers);
* the student's input: ``x_t = (1 − t)·x0 + t·ε`` with the sample's own noise (``student_input=paired``:
  the state its Euler sampler reaches when its earlier steps were right), or with fresh noise
  (``fresh``, as LADD), or the state its own sampler reaches from ``ε`` (``rollout``, no gradient
  through the earlier steps: :mod:`.flux_student`); its one-step estimate ``x̂0 = x_t − t·v̂`` is the fake;
* ``real`` = the teacher samples (a ``real_mix`` fraction replaced by data latents), both re-noised
  to ``σ`` by the discriminator (latent D, or the teacher's own features with ``flux_features``);
* ``base_losses = {"distill": w · MSE(x̂0, x0)}``: the regression to the teacher's output from the
  same noise (``regression_weight`` ``w``; paired or rollout inputs; 0 = LADD's adversarial loss alone).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from advtune.tasks.base import TaskOutput
from advtune.tasks.flow_matching import euler_sample, interpolate, one_step_estimate, sampler_levels
from advtune.tasks.flux_adapter import FluxAdapterTask, is_sharded
from advtune.tasks.flux_arguments import check_flux_task_arguments
from advtune.tasks.flux_student import rollout, sampler_grid

__all__ = ["FluxDistillTask", "STUDENT_INPUTS"]

STUDENT_INPUTS: tuple[str, ...] = ("paired", "rollout", "fresh")
# Validation's val/diffusion_mse of the student uses the plain flow-matching levels.
_VALIDATION_TIMESTEPS = dict(scheme="logit_normal", logit_mean=0.0, logit_std=1.0, mode_scale=1.29, shift=1.0)


class FluxDistillTask(FluxAdapterTask):
    """Distil a Flux teacher (the base, or the base + ``teacher_lora``) into a few-step LoRA student.

    Args (the base, adapters, latents and validation ones as :class:`~advtune.tasks.flux_lora.FluxLoRATask`):
        teacher_lora: diffusers-format LoRA file: the teacher is the base plus it, and the student
            starts equal to it (its targets and scale, rank ``max(rank, its rank)``; ``adapter_type=lora`` only).
        teacher_steps: Euler steps of the teacher (samples for the cache, validation, evaluation).
        student_steps: step counts the student is trained for; ``t`` is drawn from their levels.
        student_input: ``paired`` (the sample's own noise), ``rollout`` (its own sampler's state from that
            noise; each position ``(k, i)`` of its samplers equally likely) or ``fresh`` (new noise).
        regression_weight: weight of ``MSE(x̂0, x0)`` (not with ``fresh``; 0: adversarial only).
        disc_sigma_logit_mean, disc_sigma_logit_std: logit-normal of the discriminator's re-noising level.
        real_mix: fraction of D's real samples taken from the data's latents (``real_latents``).
        guidance_scale, validation_guidance_scale: the inference guidance is ``validation_guidance_scale``
            (``None``: ``guidance_scale``); the teacher samples at it, the student trains and samples at it.
        recommended_steps: step count written in the exported LoRA's metadata (``None``: the largest
            of ``student_steps``).
    """

    def __init__(
        self, transformer: nn.Module | None = None, snapshot: str | None = None, pretrained_path: str | None = None,
        pretrained_subfolder: str | None = None, transformer_config: dict[str, Any] | None = None,
        base_dtype: str | None = None, quantize: str | None = None, gradient_checkpointing: bool = False,
        teacher_lora: str | None = None, teacher_steps: int = 32, adapter_type: str = "lora", rank: int = 32,
        alpha: float = 32.0, dropout: float = 0.0, target_modules: Sequence[str] | None = None, lokr_factor: int = -1,
        latent_channels: int | None = None, latent_size: int = 8, codec: Any | None = None,
        student_steps: Sequence[int] = (1, 2, 4), student_input: str = "rollout", regression_weight: float = 1.0,
        disc_sigma_logit_mean: float = 1.0, disc_sigma_logit_std: float = 1.0, real_mix: float = 0.0,
        guidance_scale: float = 1.0, validation_guidance_scale: float | None = None,
        recommended_steps: int | None = None, validation_num_steps: Sequence[int] = (1, 2, 4),
        num_validation_samples: int = 256, validation_batch_size: int = 64, validation_resolution: int | None = None,
        sample_shift: float | None = None, digits_metric: bool = True, seed: int = 0,
        checkpoint_base_weights: bool = False,
    ) -> None:
        check_flux_task_arguments(locals())  # one line naming the task.* key of a value that makes no sense
        if teacher_lora is not None and adapter_type != "lora":
            raise ValueError(f"FluxDistillTask: teacher_lora needs adapter_type=lora (peft), got {adapter_type!r}")
        if adapter_type == "none":
            raise ValueError("FluxDistillTask: the teacher is the frozen base, so the student must be an adapter "
                             "(adapter_type=lora, lycoris_lora, lokr or loha), not none")
        if student_input not in STUDENT_INPUTS:
            raise ValueError(f"FluxDistillTask: student_input must be one of {STUDENT_INPUTS}, got {student_input!r}")
        if regression_weight < 0 or (regression_weight > 0 and student_input == "fresh"):
            raise ValueError(f"FluxDistillTask: regression_weight={regression_weight} must be >= 0 and needs "
                             f"student_input=paired or rollout (the teacher's output from the same noise)")
        if not student_steps or min(int(n) for n in student_steps) < 1 or int(teacher_steps) < 1:
            raise ValueError(f"FluxDistillTask: student_steps {list(student_steps)} and teacher_steps {teacher_steps} "
                             f"must be step counts >= 1")
        if not 0.0 <= real_mix <= 1.0:
            raise ValueError(f"FluxDistillTask: real_mix must lie in [0, 1], got {real_mix}")
        self.teacher_lora = None if teacher_lora is None else str(teacher_lora)
        super().__init__(
            transformer=transformer, snapshot=snapshot, pretrained_path=pretrained_path,
            pretrained_subfolder=pretrained_subfolder, transformer_config=transformer_config, base_dtype=base_dtype,
            quantize=quantize, gradient_checkpointing=gradient_checkpointing, adapter_type=adapter_type, rank=rank,
            alpha=alpha, dropout=dropout, target_modules=target_modules, lokr_factor=lokr_factor,
            latent_channels=latent_channels, latent_size=latent_size, codec=codec, timestep_args=_VALIDATION_TIMESTEPS,
            guidance_scale=guidance_scale, validation_guidance_scale=validation_guidance_scale,
            validation_num_steps=validation_num_steps, num_validation_samples=num_validation_samples,
            validation_batch_size=validation_batch_size, validation_resolution=validation_resolution,
            sample_shift=sample_shift, digits_metric=digits_metric, seed=seed,
            checkpoint_base_weights=checkpoint_base_weights)
        self.teacher_steps = int(teacher_steps)
        self.student_steps = sorted({int(n) for n in student_steps})
        self.student_input = student_input
        self.regression_weight = float(regression_weight)
        self.disc_sigma = (float(disc_sigma_logit_mean), float(disc_sigma_logit_std))
        self.real_mix = float(real_mix)
        self.recommended_steps = int(recommended_steps or max(self.student_steps))
        self._teacher_images: dict[tuple, torch.Tensor] = {}  # the frozen teacher's validation renders

    def _add_adapters(self, transformer, adapter_type, rank, alpha, dropout, target_modules, lokr_factor):
        if self.teacher_lora is None:
            return super()._add_adapters(transformer, adapter_type, rank, alpha, dropout, target_modules, lokr_factor)
        from advtune.tasks.flux_teacher import add_student_from_teacher, load_teacher_lora

        transformer.requires_grad_(False)
        load_teacher_lora(transformer, self.teacher_lora)
        add_student_from_teacher(transformer, rank)
        return None

    # ---- the teacher ---------------------------------------------------------------------------
    def teacher_mode(self) -> contextlib.AbstractContextManager:
        """Context in which the transformer is the teacher (adapters off, or the teacher LoRA alone)."""
        from advtune.adapters import set_adapters_enabled
        from advtune.tasks.flux_teacher import TEACHER_ADAPTER, active_adapter

        if self.teacher_lora is None:
            return set_adapters_enabled(self.transformer, False)
        return active_adapter(self.transformer, TEACHER_ADAPTER)

    def teacher_fingerprint(self) -> dict[str, Any]:
        """What decides the teacher's samples (a teacher-sample cache key): its weights, steps, guidance, shift."""
        from advtune.tasks.flux_teacher import weights_fingerprint

        student = {id(p) for p in self._trainable}
        weights = weights_fingerprint((n, p) for n, p in self.transformer.named_parameters() if id(p) not in student)
        return {"weights": weights, "teacher_steps": self.teacher_steps, "guidance": self.validation_guidance_scale,
                "sample_shift": self.sample_shift, "scheduler": self.scheduler_config}

    @torch.no_grad()
    def teacher_generate(self, noise: torch.Tensor, prompt_embeds: torch.Tensor | None = None,
                         pooled_prompt_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """The teacher's latents ``(B, C, H, W)`` after ``teacher_steps`` Euler steps from ``noise``."""
        batch = {} if prompt_embeds is None else {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled_prompt_embeds}
        prompt = self._prompt(batch, noise.shape[0], noise.device)
        with self.teacher_mode():
            return euler_sample(lambda x, t: self._velocity(x, t, prompt, self.validation_guidance_scale),
                                noise.float(), self.teacher_steps, self._shift(*noise.shape[2:]))

    @torch.no_grad()
    def teacher_sample(self, num_samples: int, generator: torch.Generator | None = None,
                       prompt_index: int = 0) -> torch.Tensor:
        """Decoded teacher samples ``(N, C, H, W)`` in [-1, 1] (``teacher_steps``), as :meth:`sample` draws them."""
        with self.teacher_mode():
            return self._euler_images(num_samples, generator, self.teacher_steps, prompt_index,
                                      self.validation_guidance_scale)

    def discriminator_kwargs(self) -> dict[str, Any]:
        """``flux_features`` reads the teacher's features, at the inference guidance."""
        return {"transformer": self.transformer, "teacher_context": self.teacher_mode,
                "guidance_scale": self.validation_guidance_scale}

    # ---- the student step --------------------------------------------------------------------
    def student_levels(self, latent_height: int, latent_width: int) -> list[float]:
        """The levels the student's ``student_steps`` Euler samplers call it at, for latents of this size."""
        shift = self._shift(latent_height, latent_width)
        return sorted({level for n in self.student_steps for level in sampler_levels(n, shift)}, reverse=True)

    def _velocity(self, x_t, t, prompt, guidance=None):
        # The student learns to produce the teacher's output at the inference guidance, so it runs at it.
        return super()._velocity(x_t, t, prompt, self.validation_guidance_scale if guidance is None else guidance)

    def generator_predict(self, batch: Any) -> TaskOutput:
        from advtune.discriminators.latent import sample_renoise_sigma
        from advtune.models.flux_base import output_layer_weight

        x0 = self._latents(batch)
        batch_size, device = x0.shape[0], x0.device
        prompt = self._prompt(batch, batch_size, device)
        noise = torch.randn_like(x0) if self.student_input == "fresh" else self._latents(batch, "noise")
        if self.student_input == "rollout":
            schedules, index = sampler_grid(self.student_steps, self._shift(*x0.shape[2:]), device)
            position = torch.randint(len(index), (batch_size,), device=device)
            x_t, t = rollout(lambda x, level, rows: self._velocity(x, level, (prompt[0][rows], prompt[1][rows])),
                             noise, schedules[position], index[position])
        else:
            levels = torch.tensor(self.student_levels(*x0.shape[2:]), device=device)
            t = levels[torch.randint(len(levels), (batch_size,), device=device)]
            x_t = interpolate(x0, noise, t)
        fake = one_step_estimate(x_t, self._velocity(x_t, t, prompt), t)
        mse = F.mse_loss(fake, x0)
        real = x0
        if self.real_mix > 0:
            data = self._latents(batch, "real_latents")
            take = (torch.rand(batch_size, device=device) < self.real_mix).view(-1, 1, 1, 1)
            real = torch.where(take, data, x0)
        cond: dict[str, Any] = {"sigma": sample_renoise_sigma(batch_size, *self.disc_sigma, device=device)}
        if "prompt_embeds" in batch:
            cond.update(prompt_embeds=prompt[0], pooled_prompt_embeds=prompt[1])
        return TaskOutput(
            real=real, fake=fake,
            base_losses={"distill": self.regression_weight * mse} if self.regression_weight > 0 else {},
            cond=cond,
            last_layer=None if is_sharded(self.transformer) else output_layer_weight(self.transformer, self.lycoris),
            logs={"g/distill_mse": mse.detach(), "g/level_mean": t.mean().detach()},
        )

    # ---- validation and export -----------------------------------------------------------------
    def _columns(self) -> dict[str, Callable[..., torch.Tensor]]:
        """The teacher (rendered once: it is frozen) first, then the student at each step count."""
        def teacher(num: int, generator: torch.Generator, i: int = 0) -> torch.Tensor:
            key = (num, generator.initial_seed(), i)
            if key not in self._teacher_images:
                self._teacher_images[key] = self.teacher_sample(num, generator, prompt_index=i)
            return self._teacher_images[key]

        return {f"teacher, {self.teacher_steps} steps": teacher, **super()._columns()}

    def export_metadata(self) -> dict[str, str]:
        """How to sample the student: its recommended step count and guidance, and its teacher."""
        return {"advtune_recommended_num_steps": str(self.recommended_steps),
                "advtune_recommended_guidance_scale": str(self.validation_guidance_scale),
                "advtune_student_steps": ",".join(map(str, self.student_steps)),
                "advtune_teacher": Path(self.teacher_lora).name if self.teacher_lora else "base",
                "advtune_teacher_steps": str(self.teacher_steps)}
