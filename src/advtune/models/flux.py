"""diffusers' ``FluxTransformer2DModel``: a tiny config, local loading, and FluxPipeline's latent layout.

Flux (Black Forest Labs 2024) is a rectified-flow transformer over *packed* latents: each 2×2
patch of a ``(B, C, H, W)`` latent becomes one token of ``4·C`` channels, so the transformer's
``in_channels`` is ``4·C`` (64 for FLUX.1's 16-channel VAE). Each token carries a 3-axis position
id ``(0, row, col)`` on the packed grid, used by the rotary embedding; text tokens get ids of zero.
The functions below re-implement ``FluxPipeline._pack_latents``, ``_unpack_latents`` and
``_prepare_latent_image_ids`` as small standalone functions (tested against each other).

Text conditioning: the tiny default has no text encoder. It is conditioned on a fixed *null
prompt* — ``text_seq_len`` zero vectors of width ``joint_attention_dim`` and a zero pooled vector —
exactly what an empty prompt is for an unconditional model: a constant. Users of a real FLUX.1
checkpoint cache their T5/CLIP outputs and put them in the batch under ``"prompt_embeds"``
``(B, S, joint_attention_dim)`` and ``"pooled_prompt_embeds"`` ``(B, pooled_projection_dim)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:  # diffusers takes seconds to import; only type checkers see it here
    from diffusers import FluxTransformer2DModel

__all__ = [
    "build_flux_transformer",
    "check_pretrained_dir",
    "load_flux_transformer",
    "pack_latents",
    "unpack_latents",
    "latent_image_ids",
    "validate_latents",
    "null_prompt",
    "compute_dtype",
    "predict_velocity",
]

FLUX_CLASS_NAME = "FluxTransformer2DModel"


def build_flux_transformer(
    in_channels: int = 4,
    num_layers: int = 1,
    num_single_layers: int = 1,
    attention_head_dim: int = 16,
    num_attention_heads: int = 2,
    joint_attention_dim: int = 32,
    pooled_projection_dim: int = 32,
    guidance_embeds: bool = False,
    axes_dims_rope: Sequence[int] = (4, 6, 6),
    seed: int | None = 0,
) -> "FluxTransformer2DModel":
    """Build a (by default tiny) ``FluxTransformer2DModel`` from its config.

    The default (1 double + 1 single block, width 32, 4 input channels = one packed 1-channel
    latent) has about 68 k parameters and takes tens of milliseconds per training step on a CPU.
    FLUX.1-dev is ``in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
    guidance_embeds=True, axes_dims_rope=(16, 56, 56)``.

    Args:
        in_channels: channels of a packed token, ``4 × latent channels``.
        num_layers: double-stream (MMDiT) blocks.
        num_single_layers: single-stream blocks.
        attention_head_dim: width of one attention head; must equal ``sum(axes_dims_rope)``.
        num_attention_heads: heads; the model width is ``heads × head_dim``.
        joint_attention_dim: width of the text embeddings ``encoder_hidden_states``.
        pooled_projection_dim: width of the pooled text embedding.
        guidance_embeds: add the guidance-scale embedding of guidance-distilled FLUX.1-dev.
        axes_dims_rope: rotary dimensions of the three position axes (each even).
        seed: seed of the weight initialisation (``None`` uses the global RNG), so that a base
            rebuilt from this config on resume is bit-identical.
    """
    from diffusers import FluxTransformer2DModel

    axes = tuple(int(a) for a in axes_dims_rope)
    if len(axes) != 3 or any(a <= 0 or a % 2 for a in axes) or sum(axes) != attention_head_dim:
        raise ValueError(
            f"build_flux_transformer: axes_dims_rope must be 3 positive even ints summing to "
            f"attention_head_dim={attention_head_dim}, got {list(axes)}"
        )
    if in_channels < 4 or in_channels % 4:
        raise ValueError(f"build_flux_transformer: in_channels must be 4 × latent channels, got {in_channels}")
    kwargs = dict(
        patch_size=1,
        in_channels=int(in_channels),
        num_layers=int(num_layers),
        num_single_layers=int(num_single_layers),
        attention_head_dim=int(attention_head_dim),
        num_attention_heads=int(num_attention_heads),
        joint_attention_dim=int(joint_attention_dim),
        pooled_projection_dim=int(pooled_projection_dim),
        guidance_embeds=bool(guidance_embeds),
        axes_dims_rope=axes,
    )
    if seed is None:
        return FluxTransformer2DModel(**kwargs)
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(int(seed))
        return FluxTransformer2DModel(**kwargs)


def load_flux_transformer(
    local_dir: str | Path, subfolder: str | None = None, torch_dtype: str | None = None
) -> "FluxTransformer2DModel":
    """Load a ``FluxTransformer2DModel`` saved with ``save_pretrained`` from a local directory.

    Checks the directory before diffusers touches it, so a wrong path fails at once with one line
    (diffusers would otherwise try the Hub). For a full FLUX.1 snapshot pass ``subfolder="transformer"``.

    Args:
        local_dir: the model directory (or the pipeline snapshot with ``subfolder``).
        subfolder: sub-directory holding ``config.json`` and the weights.
        torch_dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``None`` (as saved).

    Raises:
        FileNotFoundError: the directory, its ``config.json`` or its weights do not exist.
        ValueError: the config is not a ``FluxTransformer2DModel`` one.
    """
    from diffusers import FluxTransformer2DModel

    model_dir = check_pretrained_dir(local_dir, subfolder, FLUX_CLASS_NAME, "Flux transformer")
    if not any(model_dir.glob("diffusion_pytorch_model*")):
        raise FileNotFoundError(f"no diffusion_pytorch_model weights in Flux transformer directory {model_dir}")
    dtype = getattr(torch, torch_dtype) if torch_dtype else None
    return FluxTransformer2DModel.from_pretrained(str(model_dir), torch_dtype=dtype, local_files_only=True)


def check_pretrained_dir(local_dir: str | Path, subfolder: str | None, class_name: str, what: str) -> Path:
    """Return ``local_dir/subfolder`` after checking it holds a ``config.json`` of ``class_name``.

    Raises one-line ``FileNotFoundError`` / ``ValueError`` naming the path, so a wrong path fails
    before diffusers would fall back to the Hub.
    """
    model_dir = Path(local_dir).expanduser() / (subfolder or "")
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{what} directory not found: {model_dir}")
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no config.json in {what} directory {model_dir}")
    try:
        found = json.loads(config_file.read_text()).get("_class_name")
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError) as error:
        raise ValueError(f"unreadable config.json in {model_dir}: {error}") from None
    if found != class_name:
        raise ValueError(f"{config_file} describes a {found!r}, expected a {class_name!r}")
    return model_dir


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, H/2 · W/2, 4C)``: one token per 2×2 patch, channels-major within it."""
    batch, channels, height, width = latents.shape
    patches = latents.reshape(batch, channels, height // 2, 2, width // 2, 2)
    return patches.permute(0, 2, 4, 1, 3, 5).reshape(batch, (height // 2) * (width // 2), channels * 4)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`pack_latents`: ``(B, H/2 · W/2, 4C)`` → ``(B, C, H, W)`` (latent H, W)."""
    batch, _, packed_channels = tokens.shape
    patches = tokens.reshape(batch, height // 2, width // 2, packed_channels // 4, 2, 2)
    return patches.permute(0, 3, 1, 4, 2, 5).reshape(batch, packed_channels // 4, height, width)


def latent_image_ids(
    height: int, width: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Position ids ``(H/2 · W/2, 3)`` of the packed tokens of a ``H × W`` latent: ``(0, row, col)``."""
    rows = torch.arange(height // 2, device=device).repeat_interleave(width // 2)
    cols = torch.arange(width // 2, device=device).repeat(height // 2)
    return torch.stack([torch.zeros_like(rows), rows, cols], dim=1).to(dtype)


def validate_latents(transformer: torch.nn.Module, latents: torch.Tensor, where: str = "latents") -> None:
    """Raise one clear ``ValueError`` when ``latents`` ``(B, C, H, W)`` cannot feed ``transformer``."""
    expected = int(transformer.config.in_channels) // 4
    if latents.ndim != 4:
        raise ValueError(f"{where}: expected (B, C, H, W) latents, got shape {tuple(latents.shape)}")
    _, channels, height, width = latents.shape
    if channels != expected:
        raise ValueError(
            f"{where}: {channels}-channel latents do not fit a Flux transformer with in_channels="
            f"{transformer.config.in_channels} (needs {expected} channels), got shape {tuple(latents.shape)}"
        )
    if height % 2 or width % 2:
        raise ValueError(f"{where}: latent height and width must be even for 2×2 packing, got {height}×{width}")


def null_prompt(
    transformer: torch.nn.Module, batch_size: int, text_seq_len: int = 1, device=None, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed null-prompt conditioning: zeros ``(B, S, joint_attention_dim)`` and ``(B, pooled_dim)``."""
    config = transformer.config
    prompt = torch.zeros(batch_size, text_seq_len, config.joint_attention_dim, device=device, dtype=dtype)
    pooled = torch.zeros(batch_size, config.pooled_projection_dim, device=device, dtype=dtype)
    return prompt, pooled


def compute_dtype(transformer: torch.nn.Module) -> torch.dtype:
    """The dtype the transformer computes in: that of its input embedder's (base) weight."""
    layer = transformer.x_embedder
    return getattr(layer, "base_layer", layer).weight.dtype


def predict_velocity(
    transformer: torch.nn.Module,
    noisy_latents: torch.Tensor,
    sigmas: torch.Tensor,
    prompt_embeds: torch.Tensor,
    pooled_prompt_embeds: torch.Tensor,
    guidance_scale: float = 1.0,
) -> torch.Tensor:
    """One transformer call on unpacked latents, as ``FluxPipeline`` makes it; returns ``v̂`` ``(B, C, H, W)``.

    Args:
        transformer: a ``FluxTransformer2DModel``.
        noisy_latents: ``x_t`` ``(B, C, H, W)``.
        sigmas: noise levels ``t`` in [0, 1], ``(B,)``. The pipeline passes ``timestep / 1000`` and
            the transformer multiplies by 1000 again, so the model input is the level itself.
        prompt_embeds: ``(B, S, joint_attention_dim)``.
        pooled_prompt_embeds: ``(B, pooled_projection_dim)``.
        guidance_scale: embedded guidance, used only when ``config.guidance_embeds`` is set.

    Inputs are cast to the base's dtype (:func:`compute_dtype`: bfloat16 for a bf16 or 8-bit
    FLUX.1 base) and ``v̂`` is returned in the dtype of ``noisy_latents``, so float32 latents and
    losses work over any base.
    """
    batch, _, height, width = noisy_latents.shape
    dtype, device = compute_dtype(transformer), noisy_latents.device
    guidance = None
    if transformer.config.guidance_embeds:
        guidance = torch.full((batch,), float(guidance_scale), device=device, dtype=torch.float32)
    text_ids = torch.zeros(prompt_embeds.shape[1], 3, device=device, dtype=dtype)
    tokens = transformer(
        hidden_states=pack_latents(noisy_latents).to(dtype),
        encoder_hidden_states=prompt_embeds.to(dtype),
        pooled_projections=pooled_prompt_embeds.to(dtype),
        timestep=sigmas.to(dtype),
        img_ids=latent_image_ids(height, width, device, dtype),
        txt_ids=text_ids,
        guidance=guidance,
        return_dict=False,
    )[0]
    return unpack_latents(tokens, height, width).to(noisy_latents.dtype)
