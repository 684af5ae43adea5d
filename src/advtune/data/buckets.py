"""Aspect-ratio buckets: every image trains at a size near its own shape, one bucket per batch.

As in kohya's sd-scripts and SimpleTuner, a pixel budget ``A`` (``resolution²``) defines buckets
``(w, h)`` whose sides are multiples of ``m`` (16 for FLUX.1: 8× VAE downsampling × 2×2 packing),
with ``h`` the largest multiple of ``m`` such that ``w·h ≤ A``. An image goes to the bucket whose
aspect ratio is closest to its own in log space, is resized to cover it and centre-cropped, so
no image is forced to a square. A batch holds one bucket, so its latents stack.

:class:`BucketBatchLoader` keeps the resumable order of :class:`advtune.data.loader.ResumableDataLoader`:
the batches of an epoch are a permutation fixed by ``(seed, epoch)``, split across DDP ranks, and
``state_dict`` records the epoch and the batches handed out, so a resumed run replays exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from advtune.data.loader import ResumableDataLoader

__all__ = ["MAX_ASPECT", "bucket_sizes", "assign_bucket", "bucket_batches", "BucketBatchLoader"]

#: Widest aspect ratio a bucket may have (4:1), as the usual Flux LoRA trainers allow.
MAX_ASPECT = 4.0


def bucket_sizes(resolution: int, multiple: int) -> list[tuple[int, int]]:
    """Buckets ``(width, height)`` for the pixel budget ``resolution²``, sides multiples of ``multiple``,
    with their transposes (so a portrait image gets the mirror of a landscape one's bucket)."""
    if resolution < multiple or resolution % multiple:
        raise ValueError(f"data.resolution must be a positive multiple of {multiple}, got {resolution}")
    budget, sizes = resolution * resolution, set()
    for width in range(multiple, budget // multiple + 1, multiple):
        height = budget // width // multiple * multiple
        if height >= multiple and max(width / height, height / width) <= MAX_ASPECT:
            sizes.update({(width, height), (height, width)})  # portrait buckets mirror landscape ones
    return sorted(sizes)


def assign_bucket(width: int, height: int, sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The bucket with the aspect ratio nearest to ``width / height`` (log distance; larger area on ties)."""
    target = math.log(width / height)
    return min(sizes, key=lambda s: (round(abs(math.log(s[0] / s[1]) - target), 9), -s[0] * s[1]))


def bucket_batches(buckets: Sequence[Any], batch_size: int, generator: torch.Generator | None) -> list[list[int]]:
    """Index batches that each hold one bucket; ``generator`` shuffles within buckets and the batch order.

    Incomplete batches are dropped (every batch has ``batch_size`` items); ``generator=None`` keeps
    the order (validation) and keeps the incomplete last batch of each bucket.
    """
    groups: dict[Any, list[int]] = {}
    for index, key in enumerate(buckets):
        groups.setdefault(key, []).append(index)
    batches = []
    for key in sorted(groups):
        members = torch.tensor(groups[key])
        if generator is not None:
            members = members[torch.randperm(len(members), generator=generator)]
        stop = len(members) - len(members) % batch_size if generator is not None else len(members)
        batches += [members[i:i + batch_size].tolist() for i in range(0, stop, batch_size)]
    if generator is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


class _BucketEpochOrder(Sampler[list[int]]):
    def __init__(self, buckets: Sequence[Any], batch_size: int, seed: int) -> None:
        self.buckets, self.batch_size, self.seed = list(buckets), batch_size, seed
        self.epoch, self.skip = 0, 0

    def _rank_world(self) -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _epoch_batches(self) -> list[list[int]]:
        rank, world = self._rank_world()
        batches = bucket_batches(self.buckets, self.batch_size, torch.Generator().manual_seed(self.seed + self.epoch))
        per_rank = len(batches) // world
        return batches[rank * per_rank:(rank + 1) * per_rank]

    def __len__(self) -> int:
        return len(self._epoch_batches())

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._epoch_batches()[self.skip:])


class BucketBatchLoader(ResumableDataLoader):
    """:class:`~advtune.data.loader.ResumableDataLoader` over one-bucket batches (exact mid-epoch resume).

    Args:
        dataset: map-style dataset whose items of one bucket stack.
        buckets: the bucket key of every item (e.g. its latent ``(h, w)``).
        batch_size: items per batch (per rank under DDP).
        seed: base seed of the order (``seed + epoch`` each epoch).
        **kwargs: passed to ``DataLoader`` (``num_workers``, ``collate_fn``...).
    """

    def __init__(self, dataset: Dataset, buckets: Sequence[Any], batch_size: int, seed: int = 0, **kwargs: Any) -> None:
        if len(buckets) != len(dataset):
            raise ValueError(f"{len(buckets)} bucket keys for {len(dataset)} items")
        self._order = _BucketEpochOrder(buckets, int(batch_size), int(seed))
        DataLoader.__init__(self, dataset, batch_sampler=self._order, **kwargs)  # the order yields whole batches
        self._next_epoch, self._start = 0, 0  # what the next __iter__ plays
        self._epoch, self._yielded = 0, 0      # what the current (or last) __iter__ played
