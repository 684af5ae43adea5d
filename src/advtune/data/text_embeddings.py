"""Prompt embeddings of a FLUX.1 snapshot, computed once and cached on disk.

FLUX.1 is conditioned on two text encoders: T5 gives the token embeddings ``prompt_embeds``
``(S, 4096)`` (``S`` = ``max_sequence_length``, 512 for FLUX.1-dev) and CLIP-L the pooled vector
``pooled_prompt_embeds`` ``(768,)``. They are computed by ``FluxPipeline.encode_prompt`` itself (the
pipeline loaded without transformer and VAE), so training sees exactly what ``advtune generate`` and
any diffusers user feed the transformer. The encoders are deleted right after; training reads
the cache and never loads them again.

The cache file ``text-<key>.safetensors`` holds ``prompt_embeds`` ``(P, S, D)`` and
``pooled_prompt_embeds`` ``(P, D')`` of the distinct prompts listed in its metadata. The key
hashes the prompts, the sequence length, the encoder dtype, the configs of both encoders and
tokenizers and the names, sizes and modification times of their files, so a changed caption or
encoder is re-encoded and an unchanged one never is.
"""

from __future__ import annotations

import gc
import hashlib
import json
from pathlib import Path
from typing import Sequence

import torch

__all__ = ["text_cache_key", "encode_prompts", "load_or_encode_prompts"]

_KEYED_FILES = ("text_encoder/config.json", "text_encoder_2/config.json", "tokenizer/tokenizer_config.json",
                "tokenizer_2/tokenizer_config.json", "tokenizer/tokenizer.json", "tokenizer_2/tokenizer.json")


def text_cache_key(snapshot: Path, prompts: Sequence[str], max_sequence_length: int, dtype: torch.dtype) -> str:
    """Hash of what decides the embeddings: prompts, length, dtype, encoder and tokenizer files."""
    from advtune.models.flux_snapshot import component_fingerprint

    digest = hashlib.sha256(json.dumps([list(prompts), int(max_sequence_length), str(dtype)]).encode())
    for name in _KEYED_FILES:
        path = snapshot / name
        digest.update(name.encode() + (path.read_bytes() if path.is_file() else b"-"))
    digest.update(component_fingerprint(snapshot, ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")))
    return digest.hexdigest()[:20]


@torch.no_grad()
def encode_prompts(snapshot: Path, prompts: Sequence[str], max_sequence_length: int, device: str,
                   dtype: torch.dtype, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P, S, D)`` T5 and ``(P, D')`` pooled CLIP embeddings of ``prompts`` with the snapshot's encoders.

    The encoders live only inside this call; they are freed (and the CUDA cache emptied) on return.
    """
    from diffusers import FluxPipeline

    from advtune.console import quiet_model_loading

    quiet_model_loading()
    pipeline = FluxPipeline.from_pretrained(str(snapshot), transformer=None, vae=None, torch_dtype=dtype,
                                            local_files_only=True).to(device)
    try:
        chunks = [tuple(e.cpu() for e in pipeline.encode_prompt(  # to CPU per chunk: (S, 4096) each, 4 MiB in bf16
                      list(prompts[i:i + batch_size]), prompt_2=None, device=device,
                      max_sequence_length=int(max_sequence_length))[:2])
                  for i in range(0, len(prompts), batch_size)]
        return torch.cat([c[0] for c in chunks]).contiguous(), torch.cat([c[1] for c in chunks]).contiguous()
    finally:
        del pipeline
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def load_or_encode_prompts(snapshot: Path, prompts: Sequence[str], cache_dir: Path, max_sequence_length: int,
                           device: str, dtype: torch.dtype, build: bool = True) -> dict[str, torch.Tensor]:
    """Embeddings of the distinct ``prompts`` (in order) from the cache, encoding them once if absent.

    Args:
        build: ``False`` (a DDP rank other than 0): the cache must already exist.

    Returns:
        ``{"prompt_embeds": (P, S, D), "pooled_prompt_embeds": (P, D')}``.
    """
    from safetensors.torch import load_file, save_file

    prompts = list(prompts)
    path = cache_dir / f"text-{text_cache_key(snapshot, prompts, max_sequence_length, dtype)}.safetensors"
    if path.is_file():
        return load_file(str(path))
    if not build:
        raise FileNotFoundError(f"text-embedding cache {path} is missing; rank 0 builds it in prepare_data")
    print(f"caching text embeddings of {len(prompts)} prompts (CLIP + T5 of {snapshot}) into {cache_dir} (once)")
    prompt_embeds, pooled = encode_prompts(snapshot, prompts, max_sequence_length, device, dtype)
    tensors = {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled}
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    save_file(tensors, str(partial), metadata={"prompts": json.dumps(prompts)})
    partial.replace(path)  # atomic: a reader never sees half a file
    return tensors
