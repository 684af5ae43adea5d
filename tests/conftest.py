"""Shared fixtures: a tiny deterministic task and data module for engine tests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advtune.data.loader import ResumableDataLoader
from advtune.tasks.base import AdversarialTask, TaskOutput

torch.set_num_threads(1)  # two cores are shared by the test run; keep runs reproducible and light
os.environ.setdefault("PYTHONHASHSEED", "0")

_LONG = 1000  # bytes, characters or items: beyond this, a failed `==` is summarised instead of diffed


def _summary(value: object) -> str:
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value)} bytes, sha256 {hashlib.sha256(value).hexdigest()[:16]}"
    if isinstance(value, str):
        return f"{len(value)} characters, sha256 {hashlib.sha256(value.encode()).hexdigest()[:16]}"
    return f"{type(value).__name__} of {len(value)} items"


SLOW_TEST_TIMEOUT = 900  # seconds; the default suite's limit is `timeout` in pyproject.toml


def pytest_collection_modifyitems(config, items):
    """Slow tests (multi-process runs, retraining) get a generous limit of their own; a hang still fails
    that one test, with its name, instead of eating CI's time."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT))


def pytest_assertrepr_compare(op, left, right):
    """One line for a failed ``==`` between long bytes, strings or sequences.

    pytest's own explanation runs difflib over both sides, which takes quadratic time: two differing
    weight files of a few hundred kB kept CI busy for over 20 minutes without printing anything.
    """
    kinds = (bytes, bytearray, str, list, tuple)
    if op != "==" or not (isinstance(left, kinds) and isinstance(right, kinds)):
        return None
    if max(len(left), len(right)) <= _LONG:
        return None
    first = next((i for i, (a, b) in enumerate(zip(left, right)) if a != b), min(len(left), len(right)))
    return [f"left ({_summary(left)}) != right ({_summary(right)}), first difference at index {first}"]


class ToyTask(AdversarialTask):
    """fake = G(x) (deterministic given the batch); optional base loss MSE(fake, y)."""

    def __init__(self, dim: int = 4, with_base: bool = True) -> None:
        super().__init__()
        self.dim, self.with_base = dim, with_base
        self.generator = nn.Linear(dim, dim)

    def generator_predict(self, batch):
        fake = self.generator(batch["x"])
        base = {"mse": F.mse_loss(fake, batch["y"])} if self.with_base else {}
        return TaskOutput(real=batch["y"], fake=fake, base_losses=base, last_layer=self.generator.weight)

    @torch.no_grad()
    def sample(self, num_samples, generator=None):
        return self.generator(torch.randn(num_samples, self.dim, generator=generator))

    def export(self, directory):
        from safetensors.torch import save_file

        path = Path(directory) / "generator.safetensors"
        save_file(dict(self.generator.state_dict()), str(path))
        return path


class ToyDiscriminator(nn.Module):
    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.hidden = nn.Linear(dim, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, x, **cond):
        h = torch.tanh(self.hidden(x))
        return [self.head(h)], [[h]]


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, n: int, dim: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, dim, generator=g)
        self.y = self.x @ torch.randn(dim, dim, generator=g) + 0.5

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class ToyData(L.LightningDataModule):
    def __init__(self, n: int = 64, dim: int = 4, batch_size: int = 8) -> None:
        super().__init__()
        self.dataset, self.batch_size = _Pairs(n, dim), batch_size

    def train_dataloader(self):
        return ResumableDataLoader(self.dataset, batch_size=self.batch_size, seed=0)


@pytest.fixture
def toy():
    """Factory: (task, discriminator, data) with a fixed seed."""

    def make(with_base: bool = True, dim: int = 4):
        torch.manual_seed(0)
        return ToyTask(dim, with_base), ToyDiscriminator(dim), ToyData(dim=dim)

    return make


def quiet_trainer(**kwargs) -> L.Trainer:
    """A Trainer that writes nothing and prints little."""
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    defaults.update(kwargs)
    return L.Trainer(**defaults)


@pytest.fixture
def trainer_factory():
    return quiet_trainer


def tiny_gan_overrides(out: Path, **extra: object) -> list[str]:
    """Overrides that make `experiment=digits_gan` train in a second or two."""
    overrides = [
        "experiment=digits_gan", f"output_dir={out}",
        "task.generator.hidden_dims=[32,64]", "discriminator.hidden_dims=[64,32]",
        "task.num_val_samples=64", "task.grid_size=16",
        "trainer.val_check_interval=1000", "trainer.log_every_n_steps=5", "trainer.enable_progress_bar=false",
    ]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return overrides


@pytest.fixture
def gan_overrides():
    return tiny_gan_overrides


def write_captioned_folder(folder: Path, sizes=((64, 32), (64, 32), (32, 64), (32, 64), (48, 48), (48, 48))) -> Path:
    """Random images of several aspect ratios; even-numbered ones captioned by a .txt beside them."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (width, height) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        if i % 2 == 0:
            (folder / f"img{i}.txt").write_text(f"photo {i}, sks style")
    return folder


@pytest.fixture
def captioned_folder():
    """Factory ``(folder, sizes=...) -> folder`` of captioned images for ``data=image_folder``."""
    return write_captioned_folder


@pytest.fixture(scope="session")
def tiny_flux_snapshot(tmp_path_factory):
    """A FLUX.1-layout snapshot with tiny random weights (scripts/make_tiny_flux_snapshot.py), built once."""
    from advtune.models.flux_snapshot import write_tiny_flux_snapshot

    return write_tiny_flux_snapshot(tmp_path_factory.mktemp("flux") / "FLUX.1-tiny")
