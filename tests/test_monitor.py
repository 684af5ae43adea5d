"""Health monitor: known diversity values; a collapse run and a D-wins run trigger it, a healthy run does not;
a resumed run reads on like the uninterrupted one; offset-invariant critics and the collapse reference."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from conftest import ToyData, ToyDiscriminator, ToyTask, quiet_trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from advtune import AdversarialLossCalculator
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


class _NaNSampleData(ToyData):
    """The toy pairs with one poisoned sample: once an epoch a batch (and both players' losses) is NaN."""

    def __init__(self):
        super().__init__()
        self.dataset.x[5] = float("nan")
        self.dataset.y[5] = float("nan")


def _resumable_fit(tmp_path, steps, ckpt_path=None, drop_monitor_state=False):
    torch.manual_seed(0)
    task, disc = ToyTask(with_base=True), ToyDiscriminator()
    module = AdversarialModule(task, disc, max_consecutive_nonfinite=10**6)
    monitor = HealthMonitor(None, warmup_checks=2, patience=100)
    checkpoints = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=10, save_top_k=-1, filename="s{step}", auto_insert_metric_name=False)
    if drop_monitor_state and ckpt_path is not None:  # a checkpoint written before the monitor kept state
        state = torch.load(ckpt_path, weights_only=True)
        state["callbacks"] = {k: v for k, v in state["callbacks"].items() if "HealthMonitor" not in k}
        tmp_path.mkdir(parents=True, exist_ok=True)
        ckpt_path = tmp_path / "without_monitor.ckpt"
        torch.save(state, ckpt_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet_trainer(max_steps=steps, log_every_n_steps=1, callbacks=[monitor, checkpoints],
                      enable_checkpointing=True).fit(module, datamodule=_NaNSampleData(), ckpt_path=ckpt_path)
    return monitor


def test_a_resumed_run_reads_on_like_the_uninterrupted_one(tmp_path):
    """The non-finite count is restored with the module; the monitor's last-seen count, smoothing and
    warm-up with the callback state. Before: the first logging step after the resume read 'diverging'."""
    full = _resumable_fit(tmp_path / "full", 24)
    assert full.summary()["status_counts"]["diverging"] >= 2  # the poisoned batches were seen and flagged
    _resumable_fit(tmp_path / "cut", 10)
    resumed = _resumable_fit(tmp_path / "cut", 24, ckpt_path=tmp_path / "cut" / "s10.ckpt")
    assert json.dumps(resumed.history) == json.dumps(full.history)  # every check, NaN values included
    assert resumed.status_word == full.status_word and resumed._nonfinite_seen == full._nonfinite_seen
    older = _resumable_fit(tmp_path / "old", 24, ckpt_path=tmp_path / "cut" / "s10.ckpt", drop_monitor_state=True)
    first_after, uninterrupted = older.history[0], full.history[10]  # a clean batch, after NaN ones at steps 5
    assert first_after["step"] == uninterrupted["step"] == 11 and uninterrupted["status"] == "ok"
    # without its state the monitor warms up again, but reads no 'diverging' (the old one did: count 2 > its 0)
    assert first_after["status"] == "warm-up"


def _offset_run(trainer_factory, loss_type: str) -> HealthMonitor:
    """Both players frozen; the D's every logit moved by +100 (its head bias): a finite, offset critic."""
    torch.manual_seed(0)
    task, disc, data = ToyTask(with_base=True), ToyDiscriminator(), ToyData()
    with torch.no_grad():
        disc.head.bias.fill_(100.0)
    frozen = lambda p: torch.optim.SGD(p, lr=0.0)  # noqa: E731
    module = AdversarialModule(task, disc, calculator=AdversarialLossCalculator(loss_type=loss_type),
                               generator_optimizer=frozen, discriminator_optimizer=frozen)
    monitor, _ = _fit(module, data, trainer_factory, steps=8, warmup_checks=2)
    return monitor


@pytest.mark.parametrize(("loss_type", "expected", "logit_size"),
                         [("hinge", "diverging", "absolute"), ("wgan", "ok", None), ("relativistic", "ok", "gap")])
def test_offset_invariant_critics_are_not_judged_by_their_logit_size(trainer_factory, loss_type, expected, logit_size):
    """A wgan critic (or a relativistic D) shifted by 100 is the same critic; a hinge D at 100 is not. The
    old monitor read 'diverging' for all three."""
    monitor = _offset_run(trainer_factory, loss_type)
    assert monitor.status_word == expected
    judged = monitor.summary()["judged"]
    assert judged["criterion"] == loss_type and judged["logit_size"] == logit_size
    assert judged["d_winning"] == (loss_type != "wgan")


def test_wgan_accuracies_do_not_make_d_winning(toy, trainer_factory):
    """A wgan critic whose sign happens to split reals from fakes reads accuracies of 1, which mean nothing."""
    task, disc, data = toy(with_base=False)
    with torch.no_grad():
        task.generator.bias.add_(4.0)  # far from the data: the D-winning run of the hinge test above
    module = AdversarialModule(task, disc, calculator=AdversarialLossCalculator(loss_type="wgan", gp_weight=1.0),
                               generator_optimizer=lambda p: torch.optim.SGD(p, lr=0.0),
                               discriminator_optimizer=lambda p: torch.optim.Adam(p, lr=5e-2))
    data.batch_size = 32
    monitor, messages = _fit(module, data, trainer_factory)
    assert monitor.history[-1]["real_acc"] == monitor.history[-1]["fake_acc"] == 1.0
    assert monitor.status_word == "ok" and messages == []


class _ScaledRealTask(nn.Module):
    """Fakes ``s · real``: the diversity is exactly ``s``, like a denoiser's estimates at high noise.
    ``s`` falls to ``late_scale`` after ``switch`` forwards (a collapse of a model that started well)."""

    def __init__(self, scale: float, late_scale: float | None = None, switch: int = 0):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.scale, self.late_scale, self.switch, self.calls = scale, late_scale, switch, 0

    def generator_predict(self, batch):
        self.calls += 1
        scale = self.late_scale if self.late_scale is not None and self.calls > self.switch else self.scale
        return TaskOutput(real=batch["y"], fake=scale * self.weight * batch["y"])

    def trainable_parameters(self):
        return [self.weight]

    def attach_discriminator(self, discriminator):
        pass

    def discriminator_inputs(self, output):
        return output


@pytest.mark.parametrize(("reference", "task", "expected"), [
    ("real", _ScaledRealTask(0.2), "G collapsing"),  # a good denoiser at high noise: a false alarm
    ("warmup", _ScaledRealTask(0.2), "ok"),
    ("warmup", _ScaledRealTask(0.4, late_scale=0.05, switch=10), "G collapsing"),  # 0.05 < 0.25 x 0.4
    (None, _ScaledRealTask(0.0), "ok"),  # not judged
])
def test_collapse_is_judged_against_the_chosen_reference(trainer_factory, tmp_path, reference, task, expected):
    torch.manual_seed(0)
    module = AdversarialModule(task, ToyDiscriminator(), generator_optimizer=lambda p: torch.optim.SGD(p, lr=0.0),
                               discriminator_optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    monitor = HealthMonitor(tmp_path, warmup_checks=5, patience=3, collapse_reference=reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer_factory(max_steps=30, log_every_n_steps=1, callbacks=[monitor]).fit(module, datamodule=ToyData())
    assert monitor.status_word == expected
    judged = json.loads((tmp_path / "health.json").read_text())["judged"]
    assert judged["collapse_reference"] == reference and (tmp_path / "health.png").exists()
    if reference == "warmup":
        assert judged["diversity_reference"] == pytest.approx(task.scale, rel=1e-5)


def test_collapse_reference_is_checked():
    with pytest.raises(ValueError, match="monitor.collapse_reference='data' is not valid: expected one of real, warmup"):
        HealthMonitor(collapse_reference="data")
