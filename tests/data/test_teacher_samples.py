"""The teacher-sample cache: deterministic items, atomic shards, a resumable build, and exact resume of a run."""

from __future__ import annotations

import pytest
import torch

from advtune.config import ConfigError, compose_config
from advtune.data.latents import DigitsLatentDataModule
from advtune.data.teacher_samples import TeacherSampleCache, TeacherSampleDataModule
from advtune.runner import train
from advtune.tasks.flux_distill import FluxDistillTask
from advtune.training.checkpoint_io import load_checkpoint_file

TINY = dict(in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
            joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 6, 6], seed=0)


def _module(cache_dir, **kwargs) -> TeacherSampleDataModule:
    source = DigitsLatentDataModule(batch_size=8, digits=[0, 1])
    module = TeacherSampleDataModule(source, str(cache_dir), num_samples=10, shard_size=4, generate_batch_size=3,
                                     batch_size=4, **kwargs)
    module.setup("fit")
    return module


def test_cache_items_are_the_teachers_samples_of_their_own_noise_and_resume_a_cut_build(tmp_path):
    task = FluxDistillTask(transformer_config=TINY, rank=2, teacher_steps=2)
    cache = _module(tmp_path).build(task)
    assert cache.num_shards == 3 and not cache.missing_shards() and len(cache.shard_items(2)) == 2
    item = cache.item(5)
    noise = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(5))  # sample_seed 0, item 5
    torch.testing.assert_close(item["noise"], noise, rtol=0, atol=0)
    torch.testing.assert_close(item["latents"], task.teacher_generate(noise[None])[0], rtol=1e-6, atol=1e-6)

    shard = cache.shard_file(1)
    written = shard.read_bytes()
    shard.unlink()  # a build cut short before this shard; no stray partial file is ever read
    (shard.parent / "shard-00001.partial999").write_bytes(b"half")
    rebuilt = _module(tmp_path).build(task)
    assert rebuilt.directory == cache.directory and shard.read_bytes() == written

    torch.manual_seed(3)
    other = FluxDistillTask(transformer_config={**TINY, "seed": 1}, rank=2, teacher_steps=2)
    assert _module(tmp_path).build(other).directory != cache.directory  # another teacher, another cache
    assert _module(tmp_path, sample_seed=1).build(task).directory != cache.directory


def test_dataset_items_and_errors(tmp_path):
    task = FluxDistillTask(transformer_config=TINY, rank=2, teacher_steps=1)
    module = _module(tmp_path)
    module.cache = module.build(task)
    loader = module.train_dataloader()
    batch = next(iter(loader))
    assert set(batch) == {"latents", "noise", "real_latents"} and batch["latents"].shape == (4, 1, 8, 8)
    assert len(loader) == 2  # 10 items, batches of 4, the last incomplete one dropped
    with pytest.raises(ConfigError, match="needs a task with a teacher"):
        module.build(torch.nn.Linear(1, 1))
    with pytest.raises(ConfigError, match="data.shard_size must be >= 1"):
        TeacherSampleDataModule(DigitsLatentDataModule(), str(tmp_path), shard_size=0)
    with pytest.raises(ConfigError, match="data.num_workers must be >= 0, got -7"):  # its loader is built in the Trainer
        TeacherSampleDataModule(DigitsLatentDataModule(), str(tmp_path), num_workers=-7)
    with pytest.raises(ConfigError, match="use it in a Trainer"):
        _module(tmp_path / "fresh").train_dataloader()


def _overrides(out, cache, **extra):
    items = {"experiment": "flux_lora_distill", "output_dir": out, "data.cache_dir": cache, "data.num_samples": 64,
             "data.shard_size": 16, "data.batch_size": 16, "data.source.digits": "[0,1]", "task.teacher_steps": 2,
             "task.transformer_config.num_layers": 1, "task.transformer_config.num_single_layers": 1,
             "task.num_validation_samples": 16, "task.validation_num_steps": "[1]", "disc_warmup_steps": 2,
             "trainer.val_check_interval": 50, "checkpoint_every": 5, "trainer.enable_progress_bar": "false", **extra}
    return [f"{k}={v}" for k, v in items.items()]


def test_resume_is_exact_with_the_teacher_cache(tmp_path, capsys):
    cache = tmp_path / "teacher_cache"
    train(compose_config(_overrides(tmp_path / "full", cache, **{"trainer.max_steps": 9})))
    assert capsys.readouterr().out.count("caching 64 of 64 teacher samples") == 1
    train(compose_config(_overrides(tmp_path / "cut", cache, **{"trainer.max_steps": 5})))
    train(compose_config(_overrides(tmp_path / "cut", cache, **{"trainer.max_steps": 9})))
    assert "teacher samples" not in capsys.readouterr().out  # built once, read by both later runs
    full = load_checkpoint_file(tmp_path / "full" / "checkpoints" / "last.ckpt")
    cut = load_checkpoint_file(tmp_path / "cut" / "checkpoints" / "last.ckpt")
    assert full["global_step"] == cut["global_step"] == 9
    assert any("lora_B" in key for key in full["state_dict"])
    for key, value in full["state_dict"].items():
        torch.testing.assert_close(cut["state_dict"][key], value, rtol=0, atol=0, msg=key)


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_ranks_share_the_build_and_train_on_one_cache(tmp_path):
    import os
    import subprocess
    import sys

    cache = tmp_path / "teacher_cache"
    overrides = _overrides(tmp_path / "out", cache, **{"trainer.max_steps": 3, "trainer.devices": 2})
    proc = subprocess.run([sys.executable, "-m", "advtune.cli", "train", *overrides], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("caching 64 of 64 teacher samples") == 1  # said once, by rank 0
    shards = sorted(p.name for p in next(cache.iterdir()).iterdir())
    assert shards == [f"shard-{i:05d}.safetensors" for i in range(4)]  # ranks 0 and 1 wrote two each, no leftovers
    single = TeacherSampleDataModule(DigitsLatentDataModule(digits=[0, 1]), str(cache), num_samples=64, shard_size=16)
    single.setup("fit")
    task = FluxDistillTask(transformer_config={**TINY, "num_attention_heads": 4}, rank=8, teacher_steps=2)  # the run's
    assert single.build(task).directory == next(cache.iterdir())  # what one process would have built
    checkpoint = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 3
