"""Health monitor: known diversity values; a collapse run and a D-wins run trigger it, a healthy run does not."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from advtune.monitor import STATUS_WORDS, HealthMonitor, fake_diversity
from advtune.tasks.base import TaskOutput
from advtune.training import AdversarialModule


def test_fake_diversity_is_the_ratio_of_mean_pairwise_distances():
    real = torch.tensor([[0.0, 0.0], [3.0, 4.0]])  # one pair, distance 5
    assert fake_diversity(real, torch.tensor([[1.0, 1.0], [1.0, 1.0]])).item() == 0.0  # collapsed
    assert fake_diversity(real, torch.tensor([[0.0, 0.0], [6.0, 8.0]])).item() == pytest.approx(2.0)
    assert fake_diversity(real[:1], real[:1]) is None  # one sample: no pairs


class _ConstantTask(nn.Module):
    """A generator that ignores its input: one learned output for every sample (full mode collapse)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.image = nn.Parameter(torch.zeros(4))

    def generator_predict(self, batch):
        return TaskOutput(real=batch["y"], fake=self.image.expand_as(batch["y"]))

    def trainable_parameters(self):
        return [self.image]

    def attach_discriminator(self, discriminator):
        pass

    def discriminator_inputs(self, output):
        return output


def _fit(module, data, trainer_factory, tmp_path=None, steps=40, warmup_checks=3):
    monitor = HealthMonitor(tmp_path, warmup_checks=warmup_checks, patience=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer_factory(max_steps=steps, log_every_n_steps=1, callbacks=[monitor]).fit(module, datamodule=data)
    return monitor, [str(w.message) for w in caught if str(w.message).startswith("health:")]


def test_collapse_run_is_reported_with_a_warning_and_a_summary(toy, trainer_factory, tmp_path):
    task, disc, data = toy(with_base=False)
    module = AdversarialModule(_ConstantTask(task), disc)
    monitor, messages = _fit(module, data, trainer_factory, tmp_path)
    assert monitor.status_word == "G collapsing"
    assert len(messages) == 1 and "'G collapsing' for 3 logging steps" in messages[0]
    summary = json.loads((tmp_path / "health.json").read_text())
    assert summary["final_status"] == "G collapsing" and summary["warnings"] == monitor.warnings
    assert summary["status_counts"]["warm-up"] == 3 and len(summary["history"]) == 40
    assert all(row["diversity"] == 0.0 for row in summary["history"])
    assert (tmp_path / "health.png").stat().st_size > 10_000
    assert module.trainer.logged_metrics["health/status"] == STATUS_WORDS.index("G collapsing")


def test_d_winning_run_is_reported(toy, trainer_factory):
    # A generator stuck far from the data (frozen, shifted by 4) against a fast discriminator.
    task, disc, data = toy(with_base=False)
    data.batch_size = 32
    with torch.no_grad():
        task.generator.bias.add_(4.0)
    module = AdversarialModule(task, disc, generator_optimizer=lambda p: torch.optim.SGD(p, lr=0.0),
                               discriminator_optimizer=lambda p: torch.optim.Adam(p, lr=5e-2))
    monitor, messages = _fit(module, data, trainer_factory)
    assert monitor.status_word == "D winning" and len(messages) == 1 and "'D winning'" in messages[0]
    assert monitor.history[-1]["real_acc"] == monitor.history[-1]["fake_acc"] == 1.0


def test_healthy_run_stays_ok_without_warnings(toy, trainer_factory):
    task, disc, data = toy(with_base=True)  # the generator can match the data exactly
    module = AdversarialModule(task, disc, generator_optimizer=lambda p: torch.optim.Adam(p, lr=5e-2))
    monitor, messages = _fit(module, data, trainer_factory, steps=60, warmup_checks=10)  # the default warm-up
    assert messages == [] and monitor.status_word == "ok"
    assert {row["status"] for row in monitor.history} == {"warm-up", "ok"}


def test_non_finite_losses_read_as_diverging(toy, trainer_factory):
    task, disc, data = toy(with_base=True)
    with torch.no_grad():
        task.generator.weight.fill_(float("nan"))  # every generator loss is NaN: skipped, counted
    module = AdversarialModule(task, disc, max_consecutive_nonfinite=10**6)
    monitor, _ = _fit(module, data, trainer_factory, steps=6)
    assert monitor.status_word == "diverging"
