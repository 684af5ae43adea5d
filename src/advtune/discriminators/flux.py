"""LADD-style discriminator: trainable heads on the token features of a frozen Flux transformer.

Latent Adversarial Diffusion Distillation (Sauer et al. 2024) uses the frozen teacher diffusion
model itself as the discriminator's feature network: real and fake latents are re-noised to a level
``σ`` (drawn towards high noise), passed through the teacher at that level, and light heads score
the token features of several blocks. Here the "teacher" is the *same* ``FluxTransformer2DModel``
the generator adapts, run with its adapters switched off — the base weights are shared, never
copied. The transformer is kept *outside* this module's tree (in a list), so ``parameters()``,
``state_dict()`` and the D optimizer see the heads only.

Gradients: in the D phase nothing of the generator is trained here (adapters are off and the base
is frozen); in the G phase the gradient of the heads' logits flows back through the frozen
transformer and the re-noising ``(1 − σ)·x̂`` into the fake latents, and from there to the adapters.

Memory: G's backward through the teacher keeps every block's activations (and, over an 8-bit base,
every block's dequantized weights) unless the blocks are checkpointed. Checkpointing is done here
with non-reentrant ``torch.utils.checkpoint`` around a function that switches the adapters off
itself, so the recomputation in backward (when the generator has its adapters back on) runs the
teacher again, not the student (``gradient_checkpointing``; default: as the transformer is set).
A distillation task may pass its own ``teacher_context`` (e.g. the base plus a frozen teacher LoRA).

Cost at FLUX.1 width: a head is ``LayerNorm → Linear(3072→d) → LReLU → conv3×3(d→d) → FiLM(σ) →
LReLU → conv1×1(d→1)`` on the token grid. At ``d = 256`` (and a 256-d σ embedding) that is
1,508,609 parameters per head, so heads on 8 of FLUX.1-dev's 57 blocks cost 12.1 M
(:func:`head_parameter_count`), against ~94 M for one StyleGAN-T head at full width.
"""

from __future__ import annotations

import functools
from typing import Callable, ContextManager, Sequence

import torch
import torch.utils.checkpoint
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from advtune.discriminators.base import DiscriminatorOutput
from advtune.discriminators.latent import _FiLM, batch_sigma, renoise, sample_renoise_sigma, sigma_embedding

__all__ = ["FluxTransformer2DDiscriminator", "FluxFeatureHead", "head_parameter_count"]


class FluxFeatureHead(nn.Module):
    """Scores the image tokens ``(B, N, inner_dim)`` of one block on their ``h × w`` grid → ``(B, 1, h, w)``.

    Tokens are normalised first (LayerNorm without affine: Flux's residual stream has large,
    block-dependent magnitudes) and projected to ``head_dim`` before any spatial mixing, which is
    what keeps the head small at width 3,072.
    """

    def __init__(self, inner_dim: int, head_dim: int = 256, embedding_dim: int = 256, spectral_norm: bool = False):
        super().__init__()
        wrap = apply_spectral_norm if spectral_norm else (lambda module: module)
        self.norm = nn.LayerNorm(inner_dim, elementwise_affine=False)
        self.proj = wrap(nn.Linear(inner_dim, head_dim))
        self.conv = wrap(nn.Conv2d(head_dim, head_dim, 3, padding=1))
        self.film = _FiLM(embedding_dim, head_dim)
        self.out = wrap(nn.Conv2d(head_dim, 1, 1))
        self.activation = nn.LeakyReLU(0.2)

    def forward(self, tokens: Tensor, grid: tuple[int, int], embedding: Tensor) -> tuple[Tensor, list[Tensor]]:
        projected = self.activation(self.proj(self.norm(tokens)))  # (B, N, d)
        batch, _, width = projected.shape
        spatial = projected.transpose(1, 2).reshape(batch, width, *grid)
        hidden = self.activation(self.film(self.conv(spatial), embedding))
        return self.out(hidden), [projected, hidden]


def head_parameter_count(inner_dim: int = 3072, num_heads: int = 8, head_dim: int = 256, embedding_dim: int = 256) -> int:
    """Parameters of ``num_heads`` heads at width ``inner_dim`` (FLUX.1: 3,072), counted on the meta device."""
    with torch.device("meta"):
        head = FluxFeatureHead(inner_dim, head_dim, embedding_dim)
    return num_heads * sum(p.numel() for p in head.parameters())


class _StopForward(Exception):
    """Raised by the last feature hook: the blocks after it are not needed."""


def _checkpoint_in(context: Callable[[], ContextManager], block: Callable, *args):
    """Non-reentrant checkpoint of ``block(*args)`` that runs inside ``context()``, in the forward and
    in the recomputation during backward."""
    def run(*inputs):
        with context():
            return block(*inputs)

    return torch.utils.checkpoint.checkpoint(run, *args, use_reentrant=False)


class FluxTransformer2DDiscriminator(nn.Module):
    """Heads on chosen blocks of the frozen base Flux transformer (adapters off), LADD-style.

    Args:
        transformer: the generator's ``FluxTransformer2DModel`` (frozen base + adapters). Only a
            reference is kept; it is not a sub-module.
        block_indices: blocks to read, indexing double-stream blocks then single-stream blocks
            (``0 .. num_layers + num_single_layers − 1``); ``None`` reads every block. The forward
            stops after the last chosen block.
        head_dim: width the tokens are projected to in each head.
        embedding_dim: width of the sinusoidal ``σ`` embedding feeding each head's FiLM.
        spectral_norm: spectral normalization on the heads' linear layers.
        sigma_logit_mean: logit-normal mean of the re-noising level when ``sigma`` is not passed
            (1.0 = LADD's shift towards high noise).
        sigma_logit_std: its standard deviation.
        guidance_scale: embedded guidance for guidance-distilled transformers.
        teacher_context: ``teacher_context()`` is a context manager in which the transformer is the
            teacher (default: adapters off, the bare base); entered again in each recomputation.
        gradient_checkpointing: recompute each block in backward (inside ``teacher_context``);
            ``None``: when the transformer has gradient checkpointing on.

    Forward:
        ``x`` ``(B, C, H, W)`` latents; optional ``sigma`` ``(B,)``, ``prompt_embeds``,
        ``pooled_prompt_embeds`` (null prompt when absent), ``prepared`` (``x`` comes from
        :meth:`prepare_input`: already re-noised); other cond keys are ignored →
        one ``(B, 1, H/2, W/2)`` logits map per chosen block, features ``[projected, hidden]`` per head.
    """

    # Read by trainer.strategy=fsdp (advtune.training.strategies): why this D cannot run sharded.
    fsdp_unsupported_reason = ("discriminator=flux_features runs the transformer with adapters off and stops it "
                               "mid-forward, which FSDP's wrapped forward does not allow; use discriminator=latent")

    def __init__(
        self,
        transformer: nn.Module,
        block_indices: Sequence[int] | None = None,
        head_dim: int = 256,
        embedding_dim: int = 256,
        spectral_norm: bool = False,
        sigma_logit_mean: float = 1.0,
        sigma_logit_std: float = 1.0,
        guidance_scale: float = 1.0,
        teacher_context: Callable[[], ContextManager] | None = None,
        gradient_checkpointing: bool | None = None,
    ) -> None:
        super().__init__()
        trainable_base = [n for n, p in transformer.named_parameters() if p.requires_grad and "lora_" not in n]
        if trainable_base:
            raise ValueError(
                f"FluxTransformer2DDiscriminator needs a frozen base transformer (adapter training); "
                f"{len(trainable_base)} base parameters require grad, e.g. {trainable_base[0]}"
            )
        num_blocks = len(transformer.transformer_blocks) + len(transformer.single_transformer_blocks)
        indices = list(range(num_blocks)) if block_indices is None else sorted({int(i) for i in block_indices})
        if not indices or indices[0] < 0 or indices[-1] >= num_blocks:
            raise ValueError(f"block_indices must be non-empty, within 0..{num_blocks - 1}, got {block_indices}")
        self._transformer = [transformer]  # a list: outside the module tree, so never copied or optimized
        self.block_indices = indices
        self.embedding_dim = int(embedding_dim)
        self.sigma_logit_mean = float(sigma_logit_mean)
        self.sigma_logit_std = float(sigma_logit_std)
        self.guidance_scale = float(guidance_scale)
        self.teacher_context = teacher_context
        self.gradient_checkpointing = gradient_checkpointing
        inner_dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim
        self.heads = nn.ModuleList(
            FluxFeatureHead(inner_dim, head_dim, embedding_dim, spectral_norm) for _ in indices
        )

    @property
    def transformer(self) -> nn.Module:
        """The shared base transformer (not a sub-module)."""
        return self._transformer[0]

    def _blocks(self) -> list[nn.Module]:
        t = self.transformer
        return [*t.transformer_blocks, *t.single_transformer_blocks]

    def block_features(self, x: Tensor, sigma: Tensor, prompt_embeds=None, pooled_prompt_embeds=None) -> list[Tensor]:
        """Image-token features ``(B, N, inner_dim)`` of the chosen blocks for latents ``x`` at level ``sigma``."""
        from advtune.adapters import set_adapters_enabled
        from advtune.models.flux import null_prompt, predict_velocity, validate_latents

        transformer = self.transformer
        validate_latents(transformer, x, where="FluxTransformer2DDiscriminator input")
        if prompt_embeds is None:
            prompt_embeds, pooled_prompt_embeds = null_prompt(transformer, x.shape[0], 1, x.device, x.dtype)
        captured: dict[int, Tensor] = {}
        last = self.block_indices[-1]

        def hook_for(index: int):
            def hook(_module, _inputs, output):
                # Both block types return (encoder_hidden_states, hidden_states); keep image tokens.
                captured[index] = output[1] if isinstance(output, tuple) else output
                if index == last:
                    raise _StopForward
            return hook

        blocks = self._blocks()
        handles = [blocks[i].register_forward_hook(hook_for(i)) for i in self.block_indices]
        teacher = self.teacher_context or functools.partial(set_adapters_enabled, transformer, False)
        checkpointing = self.gradient_checkpointing
        if checkpointing is None:
            checkpointing = bool(getattr(transformer, "gradient_checkpointing", False))
        saved = (getattr(transformer, "gradient_checkpointing", False), getattr(transformer, "_gradient_checkpointing_func", None))
        # diffusers' own checkpointing would recompute these blocks in backward with the adapters back on.
        transformer.gradient_checkpointing = checkpointing
        transformer._gradient_checkpointing_func = functools.partial(_checkpoint_in, teacher)
        try:
            with teacher():
                predict_velocity(transformer, x, sigma, prompt_embeds, pooled_prompt_embeds, self.guidance_scale)
        except _StopForward:
            pass
        finally:
            transformer.gradient_checkpointing, transformer._gradient_checkpointing_func = saved
            for handle in handles:
                handle.remove()
        return [captured[i] for i in self.block_indices]

    def prepare_input(self, x: Tensor, sigma: Tensor | float | None = None, **cond) -> tuple[Tensor, dict]:
        """``(x_σ, cond)``: ``x`` re-noised to ``σ`` (drawn when not given), for ``forward(x_σ, **cond)``.

        Penalties differentiate at ``x_σ``, the input the transformer sees (see
        :meth:`~advtune.discriminators.latent.LatentDiscriminator.prepare_input`).
        """
        if sigma is None:
            sigma = sample_renoise_sigma(x.shape[0], self.sigma_logit_mean, self.sigma_logit_std, x.device)
        sigma = batch_sigma(sigma, x)
        return renoise(x, sigma), {**cond, "sigma": sigma, "prepared": True}

    def forward(self, x: Tensor, sigma: Tensor | float | None = None, prompt_embeds: Tensor | None = None,
                pooled_prompt_embeds: Tensor | None = None, prepared: bool = False, **cond) -> DiscriminatorOutput:
        if prepared:
            noisy, sigma = x, batch_sigma(sigma, x)
        else:
            noisy, prepared_cond = self.prepare_input(x, sigma)
            sigma = prepared_cond["sigma"]
        tokens = self.block_features(noisy, sigma, prompt_embeds, pooled_prompt_embeds)
        embedding = sigma_embedding(sigma, self.embedding_dim).to(x.dtype)
        grid = (x.shape[2] // 2, x.shape[3] // 2)
        logits, features = [], []
        for head, block_tokens in zip(self.heads, tokens):
            head_logits, head_features = head(block_tokens, grid, embedding)
            logits.append(head_logits)
            features.append(head_features)
        return logits, features
