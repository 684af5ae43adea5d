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
bfloat16 or 8-bit base (:mod:`advtune.models.flux_base`). Checkpoints leave the frozen base out (it is
rebuilt from its config or reloaded from its directory), see ``checkpoint_base_weights``. The base
is a FLUX.1 snapshot (``pretrained=``), a saved transformer directory, or built from a config.
Validation renders the data's validation prompts or scores digits (:mod:`.flux_validation`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from advtune.tasks.base import AdversarialTask, TaskOutput
from advtune.tasks.flux_arguments import check_flux_task_arguments
from advtune.tasks.flow_matching import euler_sample, interpolate, one_step_estimate, sample_timesteps
from advtune.tasks.flux_validation import digits_validation, flux_schedule_shift, render_prompt_grid

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


def _is_sharded(module: nn.Module) -> bool:
    # Under FSDP the graph holds views FSDP gathers, not the parameters: no gradient at one of them.
    from torch.distributed.fsdp import FullyShardedDataParallel

    return isinstance(module, FullyShardedDataParallel)


class FluxLoRATask(AdversarialTask):
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
        adv_fake_levels: levels ``t`` the adversarial fake is made at. ``None``: the flow-matching ``t``
            of the same forward. A list (e.g. ``[1.0, 0.5]``, the levels a 2-step Euler sampler visits):
            each sample draws one, and a second forward gives the fake ``x̂0`` from ``x0`` noised to it, so
            the adversarial term trains the levels few-step sampling uses (ADD, Sauer et al. 2023).
        guidance_scale: embedded guidance (guidance-distilled transformers only).
        validation_guidance_scale: embedded guidance :meth:`sample` renders with (``None``: ``guidance_scale``).
        validation_num_steps: Euler step counts rendered (and scored, digits) at validation.
        num_validation_samples: digits samples per step count (and size of the real reference set).
        validation_batch_size: samples per transformer call when sampling (memory, not results).
        validation_resolution: pixel side of validation prompt images (snapshot; default 512).
        sample_shift: time shift of the sampling schedule (``None``: the snapshot scheduler's, else 1).
        digits_metric: log the digits Fréchet distance (``val/fd_{n}step``) for 1-channel outputs.
        seed: seed of validation noise, so every validation renders the same starting noise.
        checkpoint_base_weights: keep the frozen base in ``state_dict`` (off: adapters only).
    """

    export_subdir = "lora"  # periodic exports go to output_dir/lora/stepNNNNNN/

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
        super().__init__()
        from advtune.adapters import add_adapter
        from advtune.data.latents import AutoencoderKLCodec, IdentityCodec
        from advtune.models.flux import validate_latents
        from advtune.models.flux_base import load_flux_base

        if transformer is not None and (pretrained_path is not None or snapshot is not None):
            raise ValueError("FluxLoRATask: pass either transformer or pretrained_path/snapshot, not both")
        if quantize is not None and adapter_type == "none":
            raise ValueError("FluxLoRATask: task.quantize freezes the base in 8 bits; full fine-tuning "
                             "(adapter_type=none) cannot train it, use an adapter or quantize=null")
        check_flux_task_arguments(locals())  # one line naming the task.* key of a value that makes no sense
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
                         where=f"FluxLoRATask latents (latent_channels={latent_channels}, latent_size={latent_size})")
        sample_timesteps(1, timestep_sampling, logit_mean, logit_std, mode_scale, timestep_shift)  # validates
        self.transformer = transformer
        self.adapter_type = adapter_type
        network = add_adapter(transformer, adapter_type, rank, alpha, dropout, target_modules, lokr_factor)
        self.lycoris = network  # registered sub-module (or None): its weights train and checkpoint
        self.codec = codec if codec is not None else IdentityCodec()
        self.latent_shape = (latent_channels, int(latent_size), int(latent_size))
        self.timestep_args = dict(scheme=timestep_sampling, logit_mean=float(logit_mean), logit_std=float(logit_std),
                                  mode_scale=float(mode_scale), shift=float(timestep_shift))
        self.diffusion_loss_weight = float(diffusion_loss_weight)
        self.disc_sigma = (float(disc_sigma_logit_mean), float(disc_sigma_logit_std))
        if adv_fake_levels is not None and not all(0.0 < float(level) <= 1.0 for level in adv_fake_levels):
            raise ValueError(f"FluxLoRATask: adv_fake_levels must lie in (0, 1], got {list(adv_fake_levels)}")
        self.adv_fake_levels = None if adv_fake_levels is None else [float(level) for level in adv_fake_levels]
        self.guidance_scale = float(guidance_scale)
        self.validation_guidance_scale = None if validation_guidance_scale is None else float(validation_guidance_scale)
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

    # ---- the generator ---------------------------------------------------------------------
    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """Adapter parameters (all transformer parameters with ``adapter_type="none"``)."""
        return list(self._trainable)

    def fsdp_units(self) -> tuple[str, list[nn.Module]]:
        """What ``trainer.strategy=fsdp`` shards: this attribute, one unit per transformer block."""
        return "transformer", [*self.transformer.transformer_blocks, *self.transformer.single_transformer_blocks]

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
        from advtune.models.flux import predict_velocity

        return predict_velocity(self.transformer, x_t, t, prompt[0], prompt[1],
                                self.guidance_scale if guidance is None else guidance)

    def _latents(self, batch: Any) -> torch.Tensor:
        from advtune.models.flux import validate_latents

        if not isinstance(batch, dict) or "latents" not in batch:
            raise ValueError("FluxLoRATask expects dict batches with a 'latents' (B, C, H, W) entry")
        latents = batch["latents"]
        validate_latents(self.transformer, latents, where="batch['latents']")
        return latents.float()

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
        if self.adv_fake_levels is not None:
            levels = torch.tensor(self.adv_fake_levels, device=device)
            t_fake = levels[torch.randint(len(levels), (batch_size,), device=device)]
            x_fake = interpolate(x0, torch.randn_like(x0), t_fake)
            fake = one_step_estimate(x_fake, self._velocity(x_fake, t_fake, prompt), t_fake)
        return TaskOutput(
            real=x0,
            fake=fake,
            base_losses={"diffusion": self.diffusion_loss_weight * mse},
            cond=cond,
            last_layer=None if _is_sharded(self.transformer) else output_layer_weight(self.transformer, self.lycoris),
            logs={"g/diffusion_mse": mse.detach(), "g/timestep_mean": t.mean().detach()},
        )

    # ---- sampling, validation, export --------------------------------------------------------
    def _shift(self, latent_height: int, latent_width: int) -> float:
        if self.sample_shift is not None:
            return self.sample_shift
        return flux_schedule_shift(self.scheduler_config, (latent_height // 2) * (latent_width // 2))

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None, num_steps: int | None = None,
               prompt_index: int = 0) -> torch.Tensor:
        """Decoded samples ``(N, C, H, W)`` in [-1, 1] after ``num_steps`` Euler steps (default: the most
        validated), conditioned on validation prompt ``prompt_index`` when the data gave prompts."""
        steps = int(num_steps or max(self.validation_num_steps))
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
            latents = euler_sample(lambda x, t: self._velocity(x, t, prompt, self.validation_guidance_scale), chunk, steps, shift)
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

    def _render(self, output_dir: Path | None, step: int, references: torch.Tensor | None) -> dict[str, float]:
        if self._prompts is not None:
            out = Path(output_dir) / f"prompts_{step:07d}.png" if output_dir is not None else None
            grid = render_prompt_grid(lambda i, generator, n: self.sample(1, generator, n, prompt_index=i),
                                      self._prompts[0], self.validation_num_steps, self.seed, out)
            self.validation_images = {"validation/prompts_x_steps": grid}
            return {}
        out = Path(output_dir) / f"euler_steps_{step:07d}.png" if output_dir is not None else None
        return digits_validation(lambda n, generator, steps: self.sample(n, generator, steps), references,
                                 self.validation_num_steps, self.num_validation_samples, self.seed, out)

    def export(self, directory: str | Path) -> Path:
        """The adapter as ``pytorch_lora_weights.safetensors`` (diffusers format; LyCORIS: its own
        format); with ``adapter_type="none"`` the whole transformer via ``save_pretrained``."""
        from advtune.adapters import export_lora

        if self.adapter_type == "none":
            self.transformer.save_pretrained(str(directory))
            return Path(directory) / "diffusion_pytorch_model.safetensors"
        return export_lora(self.transformer, directory)
