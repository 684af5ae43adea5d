"""Per-image VAE latents on disk: only new or changed images are encoded, each into its own file.

Used by both image-folder data modules (:mod:`advtune.data.image_folder` with aspect buckets,
:class:`advtune.data.latents.ImageFolderLatentDataModule` with square crops). The cache directory
``<cache_dir>/latents-<key>/`` is keyed by what every latent shares (how images are cropped, the
resolution, the VAE's config, dtype and weight files); each image is keyed by its relative path,
size and modification time (:func:`advtune.data.item_cache.file_item_key`). An image that cannot
be read gets no file: it is named (or skipped, ``skip_bad_files``) every time it is still there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

import torch

from advtune.data.item_cache import ItemCache, compact_latent, file_item_key, legacy_cache_files, shape_tag, write_item

__all__ = ["latent_cache", "encode_new_images", "cached_images"]


def latent_cache(cache_dir: Path, shared: Sequence[bytes | str]) -> ItemCache:
    """The latent cache of ``cache_dir`` for the shared settings ``shared`` (hashed into its name)."""
    digest = hashlib.sha256()
    for part in shared:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return ItemCache(Path(cache_dir) / f"latents-{digest.hexdigest()[:20]}")


def encode_new_images(cache: ItemCache, files: Sequence[Path], root: Path, plan: Callable[[Path], Hashable],
                      load: Callable[[Path, Any], torch.Tensor], make_codec: Callable[[], Any], batch_size: int,
                      skip_bad: bool, where: str) -> int:
    """Encode the images of ``files`` that have no cached latent yet; return how many were written.

    Args:
        cache: the latent cache.
        files: every image of the dataset (the cached ones are only stat-ed).
        root: the folder keys are relative to.
        plan: opens one image fully (a corrupt file raises) and returns its size key (its bucket);
            images of one key stack, so they are encoded together.
        load: ``load(path, key)`` -> ``(3, H, W)`` in [-1, 1].
        make_codec: builds the codec (``encode``: ``(B, 3, H, W)`` -> ``(B, C, h, w)``), only when needed.
        batch_size: images per codec call.
        skip_bad: unreadable images are skipped with a warning (``False``: one error naming them).
        where: the config key or folder named in messages.
    """
    from advtune.data.buckets import bucket_batches
    from advtune.data.scan import scan_files

    keys = [file_item_key(path, root) for path in files]
    new = [files[i] for i in cache.missing(keys)]
    if not new:
        return 0
    legacy = legacy_cache_files(cache.directory.parent)
    note = f"; the old single-file caches {', '.join(p.name for p in legacy)} are no longer read" if legacy else ""
    print(f"caching latents of {len(new)} new images ({len(files) - len(new)} cached) of {where} "
          f"into {cache.directory}{note}", flush=True)
    scanned = scan_files(new, plan, skip_bad, where=where, allow_none=len(new) < len(files))
    codec = make_codec() if scanned else None
    sizes = [size for _, size in scanned]
    for batch in bucket_batches(sizes, batch_size, generator=None):
        images = torch.stack([load(scanned[i][0], sizes[i]) for i in batch])
        for i, latent in zip(batch, codec.encode(images)):  # the shape (bucket) goes into the file name
            write_item(cache.path(file_item_key(scanned[i][0], root), shape_tag(latent.shape)),
                       {"latents": compact_latent(latent)})
    return len(scanned)


def cached_images(cache: ItemCache, files: Sequence[Path], root: Path, skip_bad: bool,
                  where: str) -> tuple[list[Path], list[Path]]:
    """``(images, latent files)`` of the images that have a cached latent, in the order of ``files``.

    An image without one was unreadable when the cache was built (left out when ``skip_bad``), or
    the cache was not built: a :class:`FileNotFoundError` names it.
    """
    cached = cache.listing()
    paths = [cached.get(file_item_key(path, root)) for path in files]
    present = [i for i, path in enumerate(paths) if path is not None]
    if len(present) < len(files) and not skip_bad:
        absent = next(files[i] for i in range(len(files)) if paths[i] is None)
        raise FileNotFoundError(f"{len(files) - len(present)} images of {where} have no cached latent in "
                                f"{cache.directory} (e.g. {absent}); the caching pass builds them first")
    if not present:
        raise FileNotFoundError(f"no image of {where} has a cached latent in {cache.directory}")
    return [files[i] for i in present], [paths[i] for i in present]
