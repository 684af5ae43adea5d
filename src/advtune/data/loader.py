"""A ``DataLoader`` that resumes mid-epoch, for exact resume of a Lightning run.

The order of an epoch is a permutation fixed by ``(seed, epoch)``, split across DDP ranks, so it
never depends on the global RNG. ``state_dict`` records the epoch and the batches handed out
in it; Lightning does not prefetch from a loader whose length it knows, so at a checkpoint these
are exactly the batches trained on (the exact-resume test guards this).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["ResumableDataLoader"]


class _EpochOrder(Sampler[int]):
    def __init__(self, size: int, shuffle: bool, seed: int) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.epoch, self.skip = 0, 0

    def _rank_world(self) -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        return self.size // self._rank_world()[1]

    def __iter__(self) -> Iterator[int]:
        rank, world = self._rank_world()
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.size)
        per_rank = self.size // world
        order = order[rank * per_rank:(rank + 1) * per_rank]
        return iter(order[self.skip:].tolist())


class ResumableDataLoader(DataLoader):
    """``DataLoader`` with a seeded per-epoch order and ``state_dict``/``load_state_dict``.

    Args:
        dataset: a map-style dataset.
        batch_size: samples per batch (per rank under DDP).
        shuffle: permute each epoch (with ``seed + epoch``).
        seed: base seed of the order.
        drop_last: drop the last incomplete batch (default ``True``: every epoch has equal batches).
        **kwargs: passed to ``DataLoader`` (``num_workers``, ``collate_fn``, ``pin_memory``...).
    """

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True, **kwargs: Any) -> None:
        self._order = _EpochOrder(len(dataset), shuffle, seed)
        super().__init__(dataset, batch_size=batch_size, sampler=self._order, drop_last=drop_last, **kwargs)
        self._next_epoch, self._start = 0, 0  # what the next __iter__ plays
        self._epoch, self._yielded = 0, 0      # what the current (or last) __iter__ played

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        epoch, start = self._next_epoch, self._start
        self._next_epoch, self._start = epoch + 1, 0
        self._epoch, self._yielded = epoch, start
        # A batch sampler (batch_size None, e.g. advtune.data.buckets) skips whole batches.
        self._order.epoch, self._order.skip = epoch, start * (self.batch_size or 1)
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        if self._yielded >= len(self):  # epoch finished: resume at the start of the next one
            return {"epoch": self._epoch + 1, "batches_done": 0}
        return {"epoch": self._epoch, "batches_done": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._next_epoch, self._start = int(state["epoch"]), int(state["batches_done"])
