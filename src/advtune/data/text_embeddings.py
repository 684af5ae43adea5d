"""Prompt embeddings of a FLUX.1 snapshot, one cache file per distinct caption, encoded once.

FLUX.1 is conditioned on two text encoders: T5 gives the token embeddings ``prompt_embeds``
``(S, 4096)`` (``S`` = ``max_sequence_length``, 512 for FLUX.1-dev) and CLIP-L the pooled vector
``pooled_prompt_embeds`` ``(768,)``. They are computed by ``FluxPipeline.encode_prompt`` itself (the
pipeline loaded without transformer and VAE, T5 padded to ``S`` as the pipeline pads), so training
sees exactly what ``advtune generate`` and any diffusers user feed the transformer. The encoders
live only while there are new prompts to encode; training never loads them.

The cache ``<cache_dir>/text-<key>/`` holds one ``<hash of the text>.safetensors`` per distinct
prompt (captions and validation prompts alike; images sharing a caption share its file). The key
hashes the sequence length, the encoder dtype, the configs of both encoders and tokenizers and the
names, sizes and modification times of their files, so a changed encoder starts a new cache, and a
new or edited caption is encoded on its own (:mod:`advtune.data.item_cache`).
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Sequence

import torch

from advtune.data.item_cache import ItemCache, read_item, text_item_key, write_item

__all__ = ["text_cache_key", "text_cache", "iter_prompt_embeddings", "cache_prompts", "load_prompt_batch"]

_KEYED_FILES = ("text_encoder/config.json", "text_encoder_2/config.json", "tokenizer/tokenizer_config.json",
                "tokenizer_2/tokenizer_config.json", "tokenizer/tokenizer.json", "tokenizer_2/tokenizer.json")
_ENCODE_BATCH = 8  # prompts per encoder call


def text_cache_key(snapshot: Path, max_sequence_length: int, dtype: torch.dtype) -> str:
    """Hash of what every prompt's embeddings share: length, dtype, encoder and tokenizer files."""
    from advtune.models.flux_snapshot import component_fingerprint

    digest = hashlib.sha256(json.dumps([int(max_sequence_length), str(dtype)]).encode())
    for name in _KEYED_FILES:
        path = snapshot / name
        digest.update(name.encode() + (path.read_bytes() if path.is_file() else b"-"))
    digest.update(component_fingerprint(snapshot, ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")))
    return digest.hexdigest()[:20]


def text_cache(snapshot: Path, cache_dir: Path, max_sequence_length: int, dtype: torch.dtype) -> ItemCache:
    """The per-prompt cache of ``cache_dir`` for these encoders, length and dtype."""
    return ItemCache(Path(cache_dir) / f"text-{text_cache_key(snapshot, max_sequence_length, dtype)}")


@torch.no_grad()
def iter_prompt_embeddings(snapshot: Path, prompts: Sequence[str], max_sequence_length: int, device: str,
                           dtype: torch.dtype) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor]]:
    """Yield ``(chunk of prompts, (n, S, D) T5, (n, D') pooled CLIP)`` on CPU, a few prompts at a time.

    The encoders are loaded once, on the first chunk, and freed (and the CUDA cache emptied) when
    the iteration ends; only one chunk's embeddings is in memory at a time.
    """
    from diffusers import FluxPipeline

    from advtune.console import quiet_model_loading

    quiet_model_loading()
    pipeline = FluxPipeline.from_pretrained(str(snapshot), transformer=None, vae=None, torch_dtype=dtype,
                                            local_files_only=True).to(device)
    try:
        for start in range(0, len(prompts), _ENCODE_BATCH):
            chunk = list(prompts[start:start + _ENCODE_BATCH])
            embeds, pooled = pipeline.encode_prompt(chunk, prompt_2=None, device=device,
                                                    max_sequence_length=int(max_sequence_length))[:2]
            yield chunk, embeds.cpu(), pooled.cpu()
    finally:
        del pipeline
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def cache_prompts(snapshot: Path, prompts: Sequence[str], cache: ItemCache, max_sequence_length: int,
                  device: str, dtype: torch.dtype, build: bool = True) -> list[Path]:
    """The cache file of each prompt (in order), encoding the distinct prompts that have none.

    Args:
        build: ``False`` (a DDP rank other than 0): every prompt must be cached already.
    """
    keys = [text_item_key(prompt) for prompt in prompts]
    distinct = dict.fromkeys(keys)
    missing_keys = set(keys[i] for i in cache.missing(keys))
    if missing_keys and not build:
        raise FileNotFoundError(f"{len(missing_keys)} prompts have no cached embeddings in {cache.directory}; "
                                "rank 0 builds them in prepare_data")
    if missing_keys:
        new = list(dict.fromkeys(p for p, k in zip(prompts, keys) if k in missing_keys))
        print(f"caching text embeddings of {len(new)} new prompts ({len(distinct) - len(new)} cached; CLIP + T5 of "
              f"{snapshot}) into {cache.directory}", flush=True)
        for chunk, embeds, pooled in iter_prompt_embeddings(snapshot, new, max_sequence_length, device, dtype):
            for prompt, row, pooled_row in zip(chunk, embeds, pooled):
                write_item(cache.path(text_item_key(prompt)), {"prompt_embeds": row, "pooled_prompt_embeds": pooled_row},
                           metadata={"prompt": prompt})
    return [cache.path(key) for key in keys]


def load_prompt_batch(files: Sequence[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P, S, D)`` T5 and ``(P, D')`` pooled embeddings of the cached prompts ``files`` (a few prompts)."""
    items = [read_item(path) for path in files]
    return (torch.stack([item["prompt_embeds"] for item in items]),
            torch.stack([item["pooled_prompt_embeds"] for item in items]))
