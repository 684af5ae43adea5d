"""On-disk caches with one safetensors file per item, read per batch: RAM does not grow with the dataset.

A cache is a directory whose name carries the key of everything shared by its items (encoder
configs and weight files, resolution, dtype...). Inside, each item is ``<item key>.safetensors``,
the item key hashing what decides that item alone: an image's relative path, size and
modification time, or a caption's text. So a changed or added image or caption is a new item
encoded on its own, and an unchanged one is never encoded again.

Writes are atomic: a file is written under a hidden temporary name and renamed into place, so a
reader (another DDP rank, a crashed and restarted run) sees a whole item or none. Training reads
items by path; :class:`CachedLatentDataset` holds only paths, so a dataset of 10,000 images and
captions costs kilobytes of RAM, not the 40 GiB of FLUX.1-dev's T5 embeddings.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

__all__ = ["ItemCache", "file_item_key", "text_item_key", "write_item", "read_item", "shape_tag", "tagged_shape",
           "compact_latent", "legacy_cache_files", "CachedLatentDataset", "ValidationBatches"]

_KEY_CHARS = 32  # 128 bits of sha256: no collision among any realistic number of items


def file_item_key(path: Path, root: Path) -> str:
    """Key of one file: its path relative to ``root``, its size and its modification time."""
    stat = path.stat()
    text = f"{path.relative_to(root).as_posix()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:_KEY_CHARS]


def text_item_key(text: str) -> str:
    """Key of one caption or prompt: the hash of its exact text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_KEY_CHARS]


def write_item(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` to ``path`` atomically (temporary file in the same directory, then rename)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per writer, also across machines sharing the folder (each node's rank 0 builds its caches).
    partial = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.partial")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(partial), metadata=metadata)
    os.replace(partial, path)


def read_item(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of one cached item (the file is opened, copied from and closed)."""
    from safetensors.torch import load_file

    return load_file(str(path))


def shape_tag(shape: Sequence[int]) -> str:
    """``(16, 64, 48)`` -> ``"16x64x48"``: a latent's shape, written into its file name."""
    return "x".join(str(int(n)) for n in shape)


def tagged_shape(path: Path) -> tuple[int, ...]:
    """The shape :func:`shape_tag` wrote into ``path``'s name (``<key>.16x64x48.safetensors``)."""
    return tuple(int(n) for n in path.name.split(".")[1].split("x"))


def compact_latent(latent: torch.Tensor) -> torch.Tensor:
    """``latent`` in bfloat16 when that is lossless (a VAE run in bf16 makes such values), else as is.

    Readers cast back with ``.float()``, so training sees the same float32 values either way and
    a bf16 VAE's cache takes half the disk.
    """
    compact = latent.to(torch.bfloat16)
    return compact if torch.equal(compact.float(), latent.float()) else latent


def legacy_cache_files(cache_dir: Path) -> list[Path]:
    """Single-file caches written before per-item caches (``latents-*.safetensors``, ``text-*.safetensors``)."""
    if not cache_dir.is_dir():
        return []
    return sorted(p for p in cache_dir.glob("*.safetensors") if p.name.startswith(("latents-", "text-")))


class ItemCache:
    """A directory of per-item safetensors files ``<key>[.<tag>].safetensors`` (see the module docstring).

    What a reader needs to know of an item before reading it (a latent's shape, i.e. its bucket) is
    its file name's tag, so a data module learns all of it from one directory listing instead of
    opening 10,000 files.

    Args:
        directory: the cache's directory (its name carries the shared key); created on first write.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, key: str, tag: str | None = None) -> Path:
        """Where item ``key`` is written (``tag``: e.g. :func:`shape_tag`)."""
        return self.directory / (f"{key}.{tag}.safetensors" if tag else f"{key}.safetensors")

    def listing(self) -> dict[str, Path]:
        """Every cached item: key -> file (one ``scandir``; temporary files are hidden and left out)."""
        if not self.directory.is_dir():
            return {}
        with os.scandir(self.directory) as entries:
            return {entry.name.split(".", 1)[0]: Path(entry.path) for entry in entries
                    if entry.name.endswith(".safetensors") and not entry.name.startswith(".")}

    def missing(self, keys: Sequence[str]) -> list[int]:
        """Indices of the ``keys`` that have no file yet."""
        cached = self.listing()
        return [i for i, key in enumerate(keys) if key not in cached]


class CachedLatentDataset(Dataset):
    """``{"latents": (C, h, w) float32, ...}`` per item, read from its latent file on each access.

    Args:
        latent_files: one cached latent per item (tensor ``latents``).
        text_files: the cached embeddings of each item's caption, added as ``prompt_embeds`` ``(S, D)``
            and ``pooled_prompt_embeds`` ``(D',)`` (many items may share one caption's file).
        shared: tensors added to every item as they are (one instance prompt's embeddings).
    """

    def __init__(self, latent_files: Sequence[Path], text_files: Sequence[Path] | None = None,
                 shared: dict[str, torch.Tensor] | None = None) -> None:
        if text_files is not None and len(latent_files) != len(text_files):
            raise ValueError(f"{len(latent_files)} latent files for {len(text_files)} caption files")
        self.latent_files = list(latent_files)
        self.text_files = None if text_files is None else list(text_files)
        self.shared = dict(shared or {})

    def __len__(self) -> int:
        return len(self.latent_files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"latents": read_item(self.latent_files[index])["latents"].float(), **self.shared}
        if self.text_files is not None:
            text = read_item(self.text_files[index])
            item.update(prompt_embeds=text["prompt_embeds"], pooled_prompt_embeds=text["pooled_prompt_embeds"])
        return item


class ValidationBatches(Dataset):
    """Ready-made validation batches: ``first`` (e.g. the prompt batch) at index 0, then each index batch
    of ``items`` stacked, read from disk when asked for (``DataLoader(..., batch_size=None)``).

    Args:
        first: a batch returned as is at index 0.
        items: the held-out items.
        batches: lists of indices into ``items``; each becomes one batch.
    """

    def __init__(self, first: dict[str, Any], items: Dataset, batches: Sequence[Sequence[int]]) -> None:
        self.first, self.items, self.batches = first, items, [list(b) for b in batches]

    def __len__(self) -> int:
        return 1 + len(self.batches)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index == 0:
            return self.first
        rows = [self.items[i] for i in self.batches[index - 1]]
        return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}
