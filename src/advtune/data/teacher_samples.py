"""Teacher samples for few-step distillation: generated once by the frozen teacher, cached on disk.

A distillation run trains on what the teacher makes (LADD, Sauer et al. 2024): item ``i`` is the
teacher's sample ``x0_i`` from noise ``ε_i`` (seeded by ``(sample_seed, i)``, so any item is
reproducible alone) with the prompt of source item ``i mod M`` (the wrapped data module's ``M`` training items:
their caption embeddings; the null prompt when they have none, e.g. digits). Batches are
``{"latents": x0, "noise": ε, "real_latents": the source item's latents, + its prompt embeddings}``.

The cache (``cache_dir/teacher-<key>/shard-NNNNN.safetensors``, ``shard_size`` items each) is keyed
by what decides its content: the teacher (weights, steps, guidance, shift), the source's prompts and
latent shapes, the item count and ``sample_seed``. Each shard is written atomically (a temporary file,
then a rename), so an interrupted build resumes at the first missing shard and a reader never sees
half a shard. It is read per item through memory-mapped shards: RAM does not grow with it.

Built when training starts (:meth:`TeacherSampleDataModule.train_dataloader`: the task is then on its
device) by the fitted task's ``teacher_generate``; under DDP every rank builds every ``world``-th
missing shard and all wait at a barrier, so N GPUs build it N times faster. The global RNG is never
drawn from, so a run that built the cache and one that found it train identically.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import lightning
import torch
from torch.utils.data import DataLoader, Dataset

from advtune.config import ConfigError

__all__ = ["TeacherSampleCache", "TeacherSampleDataset", "TeacherSampleDataModule"]


class TeacherSampleCache:
    """``num_items`` teacher samples in shards of ``shard_size`` under ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | Path, num_items: int, shard_size: int) -> None:
        self.directory, self.num_items, self.shard_size = Path(directory), int(num_items), int(shard_size)
        self._handles: dict[int, Any] = {}

    @property
    def num_shards(self) -> int:
        return -(-self.num_items // self.shard_size)

    def shard_items(self, shard: int) -> range:
        return range(shard * self.shard_size, min(self.num_items, (shard + 1) * self.shard_size))

    def shard_file(self, shard: int) -> Path:
        return self.directory / f"shard-{shard:05d}.safetensors"

    def missing_shards(self) -> list[int]:
        return [s for s in range(self.num_shards) if not self.shard_file(s).is_file()]

    def write_shard(self, shard: int, tensors: dict[str, torch.Tensor]) -> None:
        """Write one shard atomically: ``tensors`` holds ``latents.<i>`` and ``noise.<i>`` of its items."""
        from safetensors.torch import save_file

        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.shard_file(shard).with_suffix(f".partial{os.getpid()}")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(partial))
        partial.replace(self.shard_file(shard))

    def item(self, index: int) -> dict[str, torch.Tensor]:
        """``{"latents", "noise"}`` of item ``index`` (its shard stays memory-mapped)."""
        from safetensors import safe_open

        shard = index // self.shard_size
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.shard_file(shard)), "pt")
        handle = self._handles[shard]
        return {"latents": handle.get_tensor(f"latents.{index}"), "noise": handle.get_tensor(f"noise.{index}")}

    def __getstate__(self) -> dict[str, Any]:  # loader workers open their own handles
        return {**self.__dict__, "_handles": {}}


class TeacherSampleDataset(Dataset):
    """Item ``i``: the cached teacher sample and noise, with source item ``i mod M`` (latents as ``real_latents``)."""

    def __init__(self, cache: TeacherSampleCache, source: Dataset) -> None:
        self.cache, self.source = cache, source

    def __len__(self) -> int:
        return self.cache.num_items

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = dict(self.source[index % len(self.source)])
        item["real_latents"] = item.pop("latents")
        item.pop("label", None)
        return {**item, **self.cache.item(index)}


class TeacherSampleDataModule(lightning.LightningDataModule):
    """A data module of teacher samples over a source data module (its prompts, latent sizes and validation).

    Args:
        source: the wrapped data module (digits latents, an image folder with captions...).
        cache_dir: where ``teacher-<key>/`` goes; share it between runs with the same teacher.
        num_samples: teacher samples of the null prompt, for a source without captions (digits).
        samples_per_prompt: samples per source item (caption) for a source with prompt embeddings.
        shard_size: items per shard file.
        generate_batch_size: samples per teacher call while building.
        sample_seed: seeds each item's noise (not the training seed: runs of several seeds share a cache).
        batch_size, num_workers, seed: loader settings (``seed``: the training order).
    """

    def __init__(self, source: lightning.LightningDataModule, cache_dir: str, num_samples: int | None = None,
                 samples_per_prompt: int = 1, shard_size: int = 256, generate_batch_size: int = 64,
                 sample_seed: int = 0, batch_size: int = 64, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        for name, value in (("samples_per_prompt", samples_per_prompt), ("shard_size", shard_size),
                            ("generate_batch_size", generate_batch_size), ("batch_size", batch_size),
                            ("num_samples", 1 if num_samples is None else num_samples)):
            if int(value) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {value}")
        if int(num_workers) < 0:  # checked here: the loaders are built only inside the Trainer
            raise ConfigError(f"data.num_workers must be >= 0, got {num_workers}")
        self.source, self.cache_dir = source, Path(cache_dir).expanduser()
        self.num_samples, self.samples_per_prompt = num_samples, int(samples_per_prompt)
        self.shard_size, self.generate_batch_size = int(shard_size), int(generate_batch_size)
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)
        if not 0 <= int(sample_seed) < 2**31:
            raise ConfigError(f"data.sample_seed must lie in [0, 2**31), got {sample_seed}")
        self.sample_seed = int(sample_seed)
        self.prepare_data_per_node = True
        self.loaders_need_trainer = True  # the cache is built by the run's teacher: checks look at the source only
        self.cache: TeacherSampleCache | None = None
        self._sizes: list[tuple[int, ...]] | None = None
        self.train_dataset: TeacherSampleDataset | None = None

    def prepare_data(self) -> None:
        """The source's own caching pass (latents, caption embeddings), on local rank 0."""
        if hasattr(self.source, "prepare_data"):
            self.source.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self.source.setup(stage)

    def _source_items(self) -> Dataset:
        dataset = getattr(self.source, "train_dataset", None)
        if dataset is None or not len(dataset):
            raise ConfigError(f"data.source ({type(self.source).__name__}) has no training items to take prompts from")
        return dataset

    def _key(self, teacher: dict[str, Any], source: Dataset, num_items: int) -> str:
        digest = hashlib.sha256(json.dumps({"teacher": teacher, "items": num_items, "seed": self.sample_seed,
                                            "shard": self.shard_size}, sort_keys=True, default=str).encode())
        for index in range(len(source)):  # what the teacher sees of each source item: its size and prompt
            item = source[index]
            digest.update(str(tuple(item["latents"].shape)).encode())
            for name in ("prompt_embeds", "pooled_prompt_embeds"):
                if name in item:
                    digest.update(item[name].float().numpy().tobytes())
        return digest.hexdigest()[:20]

    def _source_sizes(self, source: Dataset) -> list[tuple[int, ...]]:
        if self._sizes is None or len(self._sizes) != len(source):
            self._sizes = [tuple(source[index]["latents"].shape) for index in range(len(source))]
        return self._sizes

    def build(self, task: Any) -> TeacherSampleCache:
        """Open the cache of ``task``'s teacher; generate its missing shards (this rank's share) first."""
        import torch.distributed as dist

        if not hasattr(task, "teacher_generate"):
            raise ConfigError(f"data=teacher_samples needs a task with a teacher (experiment=flux_lora_distill); "
                              f"{type(task).__name__} has none")
        source = self._source_items()
        captioned = "prompt_embeds" in source[0]
        num_items = self.samples_per_prompt * len(source) if captioned else int(self.num_samples or len(source))
        directory = self.cache_dir / f"teacher-{self._key(task.teacher_fingerprint(), source, num_items)}"
        cache = TeacherSampleCache(directory, num_items, self.shard_size)
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
        missing = cache.missing_shards()
        if missing and rank == 0:
            print(f"caching {sum(len(cache.shard_items(s)) for s in missing)} of {num_items} teacher samples "
                  f"({getattr(task, 'teacher_steps', '?')} steps each) into {directory}", flush=True)
        for shard in missing[rank::world]:
            cache.write_shard(shard, self._generate(task, cache.shard_items(shard), source))
        if world > 1:
            dist.barrier()
        return cache

    @torch.no_grad()
    def _generate(self, task: Any, items: range, source: Dataset) -> dict[str, torch.Tensor]:
        device = next(task.parameters()).device
        sizes, groups = self._source_sizes(source), {}
        for index in items:  # one teacher call per latent size (and chunk)
            groups.setdefault(sizes[index % len(source)], []).append(index)
        tensors: dict[str, torch.Tensor] = {}
        for shape, indices in groups.items():
            for start in range(0, len(indices), self.generate_batch_size):
                chunk = indices[start:start + self.generate_batch_size]
                noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(
                    (self.sample_seed << 32) + index)) for index in chunk])
                prompts = [source[index % len(source)] for index in chunk]
                kwargs = {}
                if "prompt_embeds" in prompts[0]:
                    kwargs = {name: torch.stack([p[name] for p in prompts]).to(device)
                              for name in ("prompt_embeds", "pooled_prompt_embeds")}
                latents = task.teacher_generate(noise.to(device), **kwargs).float().cpu()
                for index, latent, eps in zip(chunk, latents, noise):
                    tensors[f"latents.{index}"], tensors[f"noise.{index}"] = latent, eps
        return tensors

    def train_dataloader(self) -> DataLoader:
        from advtune.data.buckets import BucketBatchLoader

        self.setup("fit")
        if self.cache is None:
            trainer = getattr(self, "trainer", None)
            if trainer is None:
                raise ConfigError("data=teacher_samples builds its cache from the run's teacher: use it in a Trainer")
            self.cache = self.build(trainer.lightning_module.task)
        source = self._source_items()
        self.train_dataset = TeacherSampleDataset(self.cache, source)
        source_sizes = self._source_sizes(source)
        sizes = [source_sizes[i % len(source)] for i in range(len(self.train_dataset))]
        loader = BucketBatchLoader(self.train_dataset, sizes, min(self.batch_size, len(self.train_dataset)),
                                   self.seed, num_workers=self.num_workers)
        if not len(loader):
            raise ConfigError(f"no latent size of the teacher samples fills data.batch_size={self.batch_size}")
        return loader

    def val_dataloader(self) -> Any:
        """The source's validation batches (digits references, prompts to render)."""
        return self.source.val_dataloader()
